"""Gated activations over our act-and-mul kernels."""
from __future__ import annotations

import torch
from torch import nn

from vllm import _custom_ops as ops

_KERNELS = {"silu": ops.silu_and_mul, "gelu": ops.gelu_and_mul,
            "gelu_pytorch_tanh": ops.gelu_tanh_and_mul}


class ActAndMul(nn.Module):
    """act(x[..., :d]) * x[..., d:], for the gate/up projection output."""

    def __init__(self, act: str = "silu") -> None:
        super().__init__()
        if act not in _KERNELS:
            raise ValueError(f"hidden activation {act!r} is not supported "
                             f"({', '.join(_KERNELS)})")
        self.name = act
        self.kernel = _KERNELS[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape[:-1] + (x.shape[-1] // 2,), dtype=x.dtype, device=x.device)
        self.kernel(out, x)
        return out
