"""Pure-PyTorch references the kernels are checked against (vLLM's numerics:
fp32 statistics, normalised value rounded to the input dtype before the
weight multiply)."""
from __future__ import annotations

import torch


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight


def fused_add_rms_norm_ref(x: torch.Tensor, residual: torch.Tensor,
                           weight: torch.Tensor, eps: float):
    summed = x.float() + residual.float()
    new_residual = summed.to(x.dtype)
    normed = summed * torch.rsqrt(summed.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight, new_residual
