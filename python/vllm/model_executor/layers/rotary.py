"""Rotary position embedding over our rotary_embedding kernel (in place)."""
from __future__ import annotations

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
    raise ValueError(f"rope scaling {kind!r} is not supported (linear, llama3)")


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
        cache = torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype)
        self.register_buffer("cos_sin_cache", cache, persistent=False)

    def forward(self, positions: torch.Tensor, query: torch.Tensor,
                key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ops.rotary_embedding(positions, query, key, self.head_size, self.cos_sin_cache,
                             self.is_neox_style)
        return query, key
