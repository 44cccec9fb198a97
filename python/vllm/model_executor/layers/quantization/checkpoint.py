"""AWQ and GPTQ checkpoints: their quantization_config read and checked,
and each quantized layer's tensors (qweight, qzeros, scales, g_idx)
gathered from the weight stream into one `<layer>.weight` QuantizedWeight
for the model's loader (or, where our kernel cannot take its groups, the
dequantized weight, with a warning)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from vllm import envs
from vllm.model_executor.layers.quantization.awq import awq_quantized
from vllm.model_executor.layers.quantization.gptq import (GPTQ_BITS, gptq_dequantized,
                                                          gptq_quantized)
from vllm.model_executor.layers.quantization.packing import QuantizedWeight

logger = logging.getLogger(__name__)

AWQ_GROUP_SIZES = (32, 64, 128, -1)  # the issue's; any multiple of 32 dividing k works
_PARTS = ("qweight", "qzeros", "scales")  # every quantized layer's, both formats
_OPTIONAL = {"awq": (), "gptq": ("g_idx",)}


@dataclass
class CheckpointQuantization:
    method: str  # "awq" or "gptq"
    bits: int
    group_size: int
    zeros_plus_one: bool = False  # GPTQ v1 checkpoints store z - 1
    desc_act: bool = False
    modules_to_not_convert: list[str] = field(default_factory=list)


def _get(qc, key, default=None):
    return qc.get(key, default) if isinstance(qc, dict) else getattr(qc, key, default)


def read_quantization_config(method: str, hf_config) -> CheckpointQuantization:
    """The checkpoint's quantization_config, checked against what we load;
    errors name what is supported."""
    qc = getattr(hf_config, "quantization_config", None) or {}
    bits = int(_get(qc, "bits", _get(qc, "w_bit", 4)))
    group_size = int(_get(qc, "group_size", _get(qc, "q_group_size", 128)))
    skip = list(_get(qc, "modules_to_not_convert", None) or [])
    if method == "awq":
        version = str(_get(qc, "version", "gemm")).lower()
        if version != "gemm":
            raise ValueError(f"AWQ version {version!r} is not supported; supported: gemm")
        if bits != 4:
            raise ValueError(f"AWQ with {bits} bits is not supported; supported: 4")
        if not _get(qc, "zero_point", True):
            raise ValueError("AWQ without zero points (zero_point=false) is not supported; "
                             "supported: zero_point=true")
        if group_size not in AWQ_GROUP_SIZES and (group_size <= 0 or group_size % 32):
            raise ValueError(f"AWQ group size {group_size} is not supported; supported: "
                             "multiples of 32 (e.g. 32, 64, 128) and -1")
        return CheckpointQuantization("awq", 4, group_size, modules_to_not_convert=skip)
    if method == "gptq":
        if bits not in GPTQ_BITS:
            raise ValueError(f"GPTQ with {bits} bits is not supported; supported: "
                             f"{', '.join(map(str, GPTQ_BITS))}")
        fmt = str(_get(qc, "checkpoint_format", _get(qc, "format", "gptq"))).lower()
        if fmt not in ("gptq", "gptq_v2"):
            raise ValueError(f"GPTQ checkpoint format {fmt!r} is not supported; supported: "
                             "gptq, gptq_v2")
        return CheckpointQuantization("gptq", bits, group_size, zeros_plus_one=fmt == "gptq",
                                      desc_act=bool(_get(qc, "desc_act", False)),
                                      modules_to_not_convert=skip)
    raise ValueError(f"no checkpoint reader for {method!r}")


def quantized_checkpoint_weights(weights: Iterable[tuple[str, torch.Tensor]],
                                 config: CheckpointQuantization
                                 ) -> Iterator[tuple[str, object]]:
    """The checkpoint's tensors, each quantized layer's parts replaced by one
    `<layer>.weight` (a QuantizedWeight, or a dense tensor where our kernel
    cannot take the layer's groups). A layer's parts may come in any order
    and from different files."""
    parts, optional = _PARTS, _OPTIONAL[config.method]
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in weights:
        layer, _, leaf = name.rpartition(".")
        if leaf not in parts + optional:
            yield name, tensor
            continue
        if _skipped(layer, config):
            raise ValueError(f"{name}: {layer} is in the checkpoint's modules_to_not_convert, "
                             "yet stored quantized")
        held = pending.setdefault(layer, {})
        held[leaf] = tensor
        if all(p in held for p in parts + optional):
            yield f"{layer}.weight", _convert(layer, pending.pop(layer), config)
    for layer, held in pending.items():  # e.g. GPTQ files without g_idx
        lacking = [p for p in parts if p not in held]
        if lacking:
            raise ValueError(f"checkpoint lacks {', '.join(f'{layer}.{p}' for p in lacking)}")
        yield f"{layer}.weight", _convert(layer, held, config)


def _skipped(layer: str, config: CheckpointQuantization) -> bool:
    # a name or dotted path matching whole components of the layer's name
    return any(f".{m}." in f".{layer}." for m in config.modules_to_not_convert)


_warned_dense = set()


# vLLM's name for the CPU weight-only int4/int8 GEMM, the role quant_linear
# plays for AWQ and GPTQ layers here (VLLM_DISABLED_KERNELS may name it)
CPU_KERNEL_NAME = "CPUWNA16LinearKernel"


def quantized_kernel_disabled() -> bool:
    return CPU_KERNEL_NAME in envs.VLLM_DISABLED_KERNELS


def _convert(layer: str, held: dict[str, torch.Tensor], config: CheckpointQuantization):
    converted = _quantized_or_dense(layer, held, config)
    if quantized_kernel_disabled() and isinstance(converted, QuantizedWeight):
        # the next kernel: the dense GEMM on the dequantized weight
        if config.method not in _warned_dense_kernel:
            _warned_dense_kernel.add(config.method)
            logger.warning("VLLM_DISABLED_KERNELS names %s: %s layers are dequantized at "
                           "load", CPU_KERNEL_NAME, config.method)
        return converted.dequantize()
    return converted


_warned_dense_kernel: set[str] = set()


def _quantized_or_dense(layer: str, held: dict[str, torch.Tensor], config):
    if config.method == "awq":
        return awq_quantized(layer, held["qweight"], held["qzeros"], held["scales"],
                             config.group_size)
    args = (layer, held["qweight"], held["qzeros"], held["scales"], held.get("g_idx"),
            config.bits, config.group_size, config.zeros_plus_one)
    quantized = gptq_quantized(*args)
    if quantized is not None:
        return quantized
    if config.group_size not in _warned_dense:
        _warned_dense.add(config.group_size)
        logger.warning("GPTQ layers whose groups cannot be cut into runs of 16 or a multiple "
                       "of 32 inputs (%s, group size %d) are dequantized at load",
                       layer, config.group_size)
    return gptq_dequantized(*args)

