"""The default backend: this project's paged attention kernels.

Decode-only steps use paged_attention_v1 (one query per sequence); any step
with a prefill or a prefill chunk uses paged_attention_prefill, which reads
cached prefixes straight from the blocks, causal within the new tokens."""
from __future__ import annotations

import torch

from vllm import _custom_ops as ops
from vllm.attention.backends.metadata import AttentionMetadata

_UNIT_SCALE = torch.tensor(1.0)


class PagedAttentionBackend:
    name = "PAGED_ATTENTION"

    @staticmethod
    def check_usable(device: str) -> None:
        """Raises a one-line ValueError when this backend cannot run on `device`."""

    @classmethod
    def forward(cls, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_cache: torch.Tensor, value_cache: torch.Tensor,
                md: AttentionMetadata, num_kv_heads: int, scale: float) -> torch.Tensor:
        ops.reshape_and_cache(key, value, key_cache, value_cache, md.slot_mapping, "auto",
                              _UNIT_SCALE, _UNIT_SCALE)
        out = torch.empty_like(query)
        if md.decode_only:
            cls.decode(out, query, key_cache, value_cache, md, num_kv_heads, scale)
        else:
            ops.paged_attention_prefill(out, query, key_cache, value_cache, num_kv_heads,
                                        scale, md.block_tables, md.query_start_loc,
                                        md.seq_lens, None, "auto", _UNIT_SCALE, _UNIT_SCALE)
        return out

    @staticmethod
    def decode(out: torch.Tensor, query: torch.Tensor, key_cache: torch.Tensor,
               value_cache: torch.Tensor, md: AttentionMetadata, num_kv_heads: int,
               scale: float) -> None:
        ops.paged_attention_v1(out, query, key_cache, value_cache, num_kv_heads, scale,
                               md.block_tables, md.seq_lens, md.block_size, md.max_seq_len,
                               None, "auto", _UNIT_SCALE, _UNIT_SCALE)
