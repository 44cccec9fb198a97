"""The attention layer: projects nothing, owns one layer's KV cache, and
hands the step's metadata (from the forward context) to the backend."""
from __future__ import annotations

import torch
from torch import nn

from vllm.attention.kv_cache_layout import kv_cache_shapes
from vllm.forward_context import get_attn_metadata


class Attention(nn.Module):
    def __init__(self, num_heads: int, head_size: int, scale: float, num_kv_heads: int,
                 backend) -> None:
        super().__init__()
        if getattr(backend, "mla_only", False):
            raise ValueError(f"attention backend {backend.name!r} runs MLA layers only "
                             "(DeepSeek-V2/V3 without VLLM_MLA_DISABLE=1); this model's "
                             "attention is not MLA")
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = scale
        self.num_kv_heads = num_kv_heads
        self.backend = backend
        # Bound by the worker once the cache is allocated: (key_cache, value_cache).
        self.kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def cache_shapes(self, num_blocks: int, block_size: int) -> list[tuple[int, ...]]:
        """The shapes of this layer's cache tensors (key, value)."""
        shapes = kv_cache_shapes(num_blocks, block_size, self.num_kv_heads, self.head_size)
        return [shapes.key, shapes.value]

    def cache_elements_per_token(self) -> int:
        return 2 * self.num_kv_heads * self.head_size

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                output_rows_only: bool = False) -> torch.Tensor:
        """`output_rows_only`: `query` holds the step's output rows only
        (AttentionMetadata.output_rows); key and value hold every row, all
        of which go to the cache."""
        if self.kv_cache is None:
            raise RuntimeError("attention layer has no KV cache bound")
        md = get_attn_metadata()
        if output_rows_only:
            md = md.for_output_rows()
        tokens, kv_tokens = query.shape[0], key.shape[0]
        out = self.backend.forward(
            query.view(tokens, self.num_heads, self.head_size),
            key.view(kv_tokens, self.num_kv_heads, self.head_size),
            value.view(kv_tokens, self.num_kv_heads, self.head_size),
            self.kv_cache[0], self.kv_cache[1], md, self.num_kv_heads, self.scale)
        return out.view(tokens, self.num_heads * self.head_size)
