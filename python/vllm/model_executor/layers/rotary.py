"""Rotary position embedding over our rotary_embedding kernel (in place)."""
from __future__ import annotations

import math

import torch
from torch import nn

from vllm import _custom_ops as ops


def _inverse_frequencies(rotary_dim: int, base: float, scaling: dict | None) -> torch.Tensor:
    # Same expression as transformers, so fp32 positions x frequencies match bit for bit.
    inv = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float()
                          / rotary_dim))
    if not scaling:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / float(scaling["factor"])
    if kind == "llama3":
        # Llama 3.1: long wavelengths slowed by `factor`, a smooth band between.
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * torch.pi / inv
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        band = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        return torch.where(band, (1 - smooth) * inv / factor + smooth * inv, scaled)
    if kind == "yarn":
        return _yarn_inverse_frequencies(inv, rotary_dim, base, scaling)
    raise ValueError(f"rope scaling {kind!r} is not supported (linear, llama3, yarn)")


def _yarn_inverse_frequencies(inv: torch.Tensor, rotary_dim: int, base: float,
                              scaling: dict) -> torch.Tensor:
    """YaRN (arXiv 2309.00071): high frequencies kept (extrapolated), low ones
    divided by `factor` (interpolated), a linear ramp between the dimensions
    that turn beta_fast and beta_slow times over the original context."""
    factor = float(scaling["factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    beta_fast = float(scaling.get("beta_fast") or 32)
    beta_slow = float(scaling.get("beta_slow") or 1)

    def dim_of(rotations: float) -> float:
        return (rotary_dim * math.log(old_len / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = dim_of(beta_fast), dim_of(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(rotary_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # the extrapolated share
    return (inv / factor) * (1 - keep) + inv * keep


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_attention_factor(scaling: dict | None) -> float:
    """The factor YaRN multiplies cos and sin by (1 for other kinds)."""
    if not scaling or scaling.get("rope_type", scaling.get("type")) != "yarn":
        return 1.0
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    factor = float(scaling["factor"])
    mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        return _yarn_mscale(factor, float(mscale)) / _yarn_mscale(factor, float(mscale_all_dim))
    return _yarn_mscale(factor)


def yarn_softmax_scale(scaling: dict | None, scale: float) -> float:
    """DeepSeek's correction of the softmax scale under YaRN: times
    mscale(factor, mscale_all_dim)^2."""
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        mscale_all_dim = scaling.get("mscale_all_dim", 0)
        if mscale_all_dim:
            m = _yarn_mscale(float(scaling["factor"]), float(mscale_all_dim))
            scale = scale * m * m
    return scale


def rope_settings(config) -> tuple[float, dict | None]:
    """(base, scaling) from a transformers config: 5.x keeps both in
    `rope_parameters`, 4.x in `rope_theta` and `rope_scaling`."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        scaling = None if params.get("rope_type", "default") == "default" else params
        return float(params["rope_theta"]), scaling
    return float(getattr(config, "rope_theta", 10000.0)), getattr(config, "rope_scaling", None)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_size: int, rotary_dim: int, max_position: int, base: float,
                 is_neox_style: bool, dtype: torch.dtype, scaling: dict | None = None) -> None:
        super().__init__()
        self.head_size = head_size
        self.is_neox_style = is_neox_style
        inv = _inverse_frequencies(rotary_dim, base, scaling)
        angles = torch.outer(torch.arange(max_position, dtype=torch.int64).float(), inv)
        cos, sin = angles.cos(), angles.sin()
        factor = rope_attention_factor(scaling)
        if factor != 1.0:  # as transformers: cos and sin scaled in fp32
            cos, sin = cos * factor, sin * factor
        cache = torch.cat([cos, sin], dim=-1).to(dtype)
        self.register_buffer("cos_sin_cache", cache, persistent=False)

    def forward(self, positions: torch.Tensor, query: torch.Tensor,
                key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ops.rotary_embedding(positions, query, key, self.head_size, self.cos_sin_cache,
                             self.is_neox_style)
        return query, key
