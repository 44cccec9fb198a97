"""A reference backend in plain PyTorch: writes the same paged cache layout
by indexing, gathers each sequence's keys and values from its block table,
and runs torch's scaled_dot_product_attention. Slow, independent of our
kernels: the thing to compare against when in doubt."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vllm.attention.backends.metadata import AttentionMetadata


class TorchSDPABackend:
    name = "TORCH_SDPA"

    @staticmethod
    def check_usable(device: str) -> None:
        """Plain PyTorch: runs wherever torch does."""

    @staticmethod
    def forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_cache: torch.Tensor, value_cache: torch.Tensor,
                md: AttentionMetadata, num_kv_heads: int, scale: float) -> torch.Tensor:
        block_size = md.block_size
        slots = md.slot_mapping.long()
        blocks, offsets = slots // block_size, slots % block_size
        # key cache [blocks, kv_heads, head, block]; value [blocks, kv_heads, block, head]
        key_cache[blocks, :, :, offsets] = key.to(key_cache.dtype)
        value_cache[blocks, :, offsets, :] = value.to(value_cache.dtype)
        out = torch.empty_like(query)
        group = query.shape[1] // num_kv_heads
        starts = md.query_start_loc.tolist()
        for i, seq_len in enumerate(md.seq_lens.tolist()):
            q = query[starts[i]:starts[i + 1]]
            q_len = q.shape[0]
            if q_len == 0:
                continue
            table = md.block_tables[i, :(seq_len + block_size - 1) // block_size].long()
            k = key_cache[table].permute(0, 3, 1, 2).reshape(-1, num_kv_heads,
                                                             key_cache.shape[2])[:seq_len]
            v = value_cache[table].permute(0, 2, 1, 3).reshape(-1, num_kv_heads,
                                                               value_cache.shape[3])[:seq_len]
            out[starts[i]:starts[i + 1]] = causal_attention(
                q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), scale)
        return out


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """q [q_len, heads, d] of a sequence's last q_len positions over its
    k [seq_len, heads, d] and v [seq_len, heads, dv]: [q_len, heads, dv]."""
    q_len, seq_len = q.shape[0], k.shape[0]
    # query row j sits at position seq_len - q_len + j
    mask = torch.arange(seq_len)[None, :] <= torch.arange(seq_len - q_len, seq_len)[:, None]
    return F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                          attn_mask=mask, scale=scale).transpose(0, 1)
