"""Typed Python wrappers over torch.ops._C: the one door to the kernels.

Names and argument order follow vLLM's _custom_ops. Each op also gets a fake
(meta) implementation so torch.compile and torch.library.opcheck can trace it.
"""
from __future__ import annotations

import torch

from vllm import envs

try:
    from vllm import _C  # registers torch.ops._C.*
except ImportError as exc:  # pure-Python builds (openvino, tpu, ...)
    _C = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None


def _apply_cpu_isa_choice() -> None:
    """Honour VLLM_CPU_ISA (auto/avx512/avx2/scalar) once, at import."""
    if _C is not None and hasattr(_C, "set_cpu_isa"):
        _C.set_cpu_isa(envs.VLLM_CPU_ISA)


_apply_cpu_isa_choice()


def cpu_isa() -> str | None:
    """The CPU kernel variant in use, or None without CPU kernels."""
    return _C.cpu_isa() if _C is not None and hasattr(_C, "cpu_isa") else None


# ---------------------------------------------------------------- layernorm
def rms_norm(out: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
             epsilon: float) -> None:
    torch.ops._C.rms_norm(out, input, weight, epsilon)


def fused_add_rms_norm(input: torch.Tensor, residual: torch.Tensor,
                       weight: torch.Tensor, epsilon: float) -> None:
    torch.ops._C.fused_add_rms_norm(input, residual, weight, epsilon)


# ---------------------------------------------------------------- fakes
if _C is not None:

    @torch.library.register_fake("_C::rms_norm")
    def _rms_norm_fake(out, input, weight, epsilon) -> None:
        return None

    @torch.library.register_fake("_C::fused_add_rms_norm")
    def _fused_add_rms_norm_fake(input, residual, weight, epsilon) -> None:
        return None
