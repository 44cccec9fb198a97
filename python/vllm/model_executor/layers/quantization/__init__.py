"""Quantized checkpoints: which method a model loads with (vLLM's names).

GGUF files (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K blocks), AWQ (GEMM, 4-bit)
and GPTQ (4/8-bit, v1/v2 zeros, act-order) checkpoints are served quantized
through our CPU kernel (`_C::quant_linear`): no dequantized copy of the
model in memory. `quantization="none"` (our own
value) loads a GGUF file dequantized to `dtype` instead, e.g. for
token-exact comparisons with transformers."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

# vLLM's names for the methods a checkpoint or the user may name
QUANTIZATION_METHODS = ("awq", "gptq", "awq_marlin", "gptq_marlin", "marlin", "gguf")
SUPPORTED_METHODS = ("awq", "gptq", "gguf")  # on CPU
# GPU kernels: a CPU engine cannot run them
_GPU_ONLY = {"awq_marlin": "awq", "gptq_marlin": "gptq", "marlin": None}
NO_QUANTIZATION = "none"


def checkpoint_method(hf_config) -> str | None:
    """The method a Hugging Face config's quantization_config names."""
    qc = getattr(hf_config, "quantization_config", None)
    if qc is None:
        return None
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    return str(method).lower() if method is not None else "unknown"


def resolve_quantization(requested: str | None, is_gguf: bool, hf_config) -> str | None:
    """The method the model loads with, or None (dense weights). Errors
    name what is supported."""
    from vllm import _custom_ops as ops

    if requested is not None:
        requested = requested.lower()
    if requested is not None and requested not in QUANTIZATION_METHODS + (NO_QUANTIZATION,):
        raise ValueError(f"Unknown quantization method: {requested}. Must be one of "
                         f"{', '.join(QUANTIZATION_METHODS)} (or '{NO_QUANTIZATION}')")
    found = "gguf" if is_gguf else checkpoint_method(hf_config)
    if requested == NO_QUANTIZATION:
        if found not in (None, "gguf"):
            raise ValueError(f"a {found} checkpoint cannot load unquantized")
        return None
    if requested in _GPU_ONLY:
        cpu_method = _GPU_ONLY[requested]
        raise ValueError(f"quantization {requested!r} runs Marlin kernels on CUDA GPUs and this "
                         "engine runs on CPU; supported on CPU: "
                         f"{', '.join(SUPPORTED_METHODS)}"
                         + (f" (use {cpu_method!r})" if cpu_method else ""))
    if found is not None and found not in SUPPORTED_METHODS:
        raise ValueError(f"the checkpoint is quantized with {found!r}, which this engine does "
                         f"not load on CPU; supported: {', '.join(SUPPORTED_METHODS)}")
    if requested == "gguf" and not is_gguf:
        raise ValueError("quantization 'gguf' needs a .gguf file")
    if requested is not None and found != requested:
        if found is None:
            raise ValueError(f"quantization {requested!r} needs a checkpoint quantized with it; "
                             f"{getattr(hf_config, 'name_or_path', 'this one') or 'this one'} "
                             "has no quantization_config")
        raise ValueError(f"Quantization method specified in the model config ({found}) does "
                         f"not match the quantization method specified in the `quantization` "
                         f"argument ({requested}).")
    if found is not None and not ops.quant_linear_available():
        logger.warning("the active CPU kernel variant (%s) has no quantized GEMM: the %s "
                       "weights are dequantized at load", ops.cpu_isa(), found)
        if found == "gguf":
            return None
    if found in ("awq", "gptq"):
        from vllm.model_executor.layers.quantization.checkpoint import read_quantization_config
        read_quantization_config(found, hf_config)  # its errors at configuration time
    return found
