"""Gated activations over our act-and-mul kernels."""
from __future__ import annotations

import torch
from torch import nn

from vllm import _custom_ops as ops
from vllm.model_executor.layers.linear import Linear, apply_linear, is_gate_up_packed

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


def gate_up_activation(x: torch.Tensor, gate_up: Linear, act: ActAndMul) -> torch.Tensor:
    """act(gate) * up of a gated MLP, gate and up from one [W_gate; W_up]
    projection (see gated_projection). The C++ decode path
    (fused_decode_layers) applies the same rule."""
    return gated_projection(gate_up.ordered_input(x), gate_up.weight, gate_up.bias,
                            gate_up.packed_weight, act)


def gated_projection(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     packed: torch.Tensor | None, act: ActAndMul) -> torch.Tensor:
    """act(x W_gate^T) * (x W_up^T) for weight = [W_gate; W_up] (+ bias).
    Where `packed` (pack_weight's copy) has the interleaved gate/up layout
    (bf16 on a CPU with packed_linear), one
    packed_linear_gated call: no 2d-wide intermediate, no separate
    activation pass, the same bits. Otherwise the projection, then the
    activation kernel."""
    if (is_gate_up_packed(packed) and x.dim() == 2 and x.dtype == torch.bfloat16
            and ops.packed_linear_available()):
        out = torch.empty(x.shape[0], weight.shape[0] // 2, dtype=x.dtype, device=x.device)
        ops.packed_linear_gated(out, x if x.stride(1) == 1 else x.contiguous(), packed,
                                bias, act.name)
        return out
    return act(apply_linear(x, weight, bias, packed))
