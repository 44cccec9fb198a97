"""Load formats: Hugging Face safetensors (sharded or not; AWQ and GPTQ
layers gathered into quantized weights), PyTorch .bin,
GGUF (quantized projections kept in their block types, the rest dequantized), and dummy (random weights, for tests and
benchmarks that need no real checkpoint)."""
from __future__ import annotations

import glob
import json
import logging
import os
import time
from typing import Iterator

import torch

from vllm.config import LOAD_FORMATS, ModelConfig
from vllm.model_executor.models import ModelRegistry
from vllm.transformers_utils.model_file_check import ModelFileError, check_safetensors

logger = logging.getLogger(__name__)


def _safetensors_files(folder: str) -> list[str]:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(folder, shard) for shard in shards]
    return sorted(glob.glob(os.path.join(folder, "*.safetensors")))


def _iterate_safetensors(files: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open
    for path in files:
        check_safetensors(path)
        try:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        except ModelFileError:
            raise
        except Exception as exc:  # the library's own checks: one line naming the file
            if type(exc).__name__ != "SafetensorError":
                raise
            raise ModelFileError(f"{path}: {exc}") from None


def _iterate_pt(folder: str) -> Iterator[tuple[str, torch.Tensor]]:
    files = sorted(glob.glob(os.path.join(folder, "pytorch_model*.bin")))
    if not files:
        raise ValueError(f"{folder} has no safetensors or pytorch_model*.bin weights")
    for path in files:
        # weights_only: tensors and plain containers only; a pickle that
        # names any other callable is refused, not run
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelFileError(f"{path}: not a loadable weights-only checkpoint "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]})"
                                 ) from None
        yield from state.items()


def _weights(config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    fmt = config.load_format
    if config.is_gguf:
        if fmt not in ("auto", "gguf"):
            raise ValueError(f"load_format {fmt!r} cannot read the GGUF file {config.path}")
        from vllm.transformers_utils.gguf_file import iterate_gguf_weights
        return iterate_gguf_weights(config.path, quantized=config.quantization == "gguf")
    if fmt == "gguf":
        raise ValueError(f"load_format 'gguf' needs a .gguf file, got {config.path}")
    files = _safetensors_files(config.path) if fmt in ("auto", "safetensors") else []
    if files:
        weights = _iterate_safetensors(files)
    elif fmt == "safetensors":
        raise ValueError(f"{config.path} has no .safetensors files")
    else:
        weights = _iterate_pt(config.path)
    if config.quantization in ("awq", "gptq"):
        from vllm.model_executor.layers.quantization.checkpoint import (
            quantized_checkpoint_weights, read_quantization_config)
        method = read_quantization_config(config.quantization, config.hf_config)
        weights = quantized_checkpoint_weights(weights, method)
    return weights


def _fill_dummy(model: torch.nn.Module, seed: int) -> None:
    # Small uniform values as vLLM's dummy loader uses: finite logits, no meaning.
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        values = torch.empty(param.shape, dtype=torch.float32).uniform_(-1e-3, 1e-3,
                                                                       generator=generator)
        param.data.copy_(values)


def weight_files(path: str, is_gguf: bool) -> list[str]:
    """The files a checkpoint's weights are read from."""
    if is_gguf:
        return [path]
    return (_safetensors_files(path)
            or sorted(glob.glob(os.path.join(path, "pytorch_model*.bin"))))


def check_runs_on_gpu(model: torch.nn.Module, config: ModelConfig) -> None:
    """The GPU path runs dense Llama-family models (F.linear and our CUDA
    norm, rotary, activation and paged-attention kernels); MoE, quantized and
    MLA models need their GPU kernels wired first (issues 19-21)."""
    from vllm.model_executor.layers.fused_moe.layer import FusedMoE
    from vllm.model_executor.models.llama import LlamaForCausalLM
    if config.quantization:
        raise ValueError(f"{config.architecture} quantized ({config.quantization}) does not run "
                         "on the GPU yet: load it dequantized (quantization='none') or on the "
                         "CPU (device='cpu')")
    if (not isinstance(model, LlamaForCausalLM)
            or any(isinstance(m, FusedMoE) for m in model.modules())
            or not all(layer.is_plain_llama() for layer in model.model.local_layers)):
        raise ValueError(f"{config.architecture} does not run on the GPU yet (dense Llama-family "
                         "models do); run it on the CPU (device='cpu')")


def get_model(config: ModelConfig, attn_backend,
              device: torch.device | str = "cpu") -> torch.nn.Module:
    """The model with its weights, on `device`: on the CPU packed for our
    CPU kernels (process_weights_after_loading); on a GPU moved there as
    loaded (F.linear and the CUDA kernels take the plain layouts)."""
    device = torch.device(device)
    if config.load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format {config.load_format!r} is not one of "
                         f"{', '.join(LOAD_FORMATS)}")
    cls = ModelRegistry.resolve(getattr(config.hf_config, "architectures", None) or [])
    start = time.perf_counter()
    with torch.no_grad():
        model = cls(config.hf_config, config.dtype, attn_backend)
        if config.load_format == "dummy":
            _fill_dummy(model, config.seed)
        else:
            loaded = model.load_weights(_weights(config))
            missing = sorted(name for name, _ in model.named_parameters()
                             if name not in loaded
                             and not (name == "lm_head.weight" and model.tie_word_embeddings))
            if missing:
                raise ValueError(f"checkpoint {config.path} lacks weights: "
                                 f"{', '.join(missing[:5])}"
                                 + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        if device.type != "cpu":
            check_runs_on_gpu(model, config)
            model.to(device)
        elif hasattr(model, "process_weights_after_loading"):
            model.process_weights_after_loading()
    model.eval()
    logger.info("loaded %s (%s, %s) on %s in %.2f s", config.architecture, config.load_format,
                config.dtype, device, time.perf_counter() - start)
    return model
