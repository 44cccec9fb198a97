"""Paged decode attention in Triton, for GPUs; runs on CPU tensors under
TRITON_INTERPRET=1 (how the tests check it).

One program per (sequence, KV head) handles the G query heads of that KV
head: scores by tl.dot of the [G, D] queries against each block's keys,
which the cache already stores as [D, block_size] (see
vllm.attention.kv_cache_layout), then an online softmax and tl.dot of the
weights with the block's [block_size, D] values.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _paged_decode_kernel(
    out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr, alibi_ptr,
    scale,
    stride_q_token, stride_o_token, stride_bt_seq,
    stride_k_block, stride_k_head, stride_v_block, stride_v_head,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_SIZE: tl.constexpr,
    HEAD_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, HAS_ALIBI: tl.constexpr,
    UPCAST: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + seq)

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, HEAD_PAD)
    t = tl.arange(0, BLOCK_SIZE)
    g_mask = g < GROUP
    d_mask = d < HEAD_SIZE
    heads = kv_head * GROUP + g

    q = tl.load(q_ptr + seq * stride_q_token + heads[:, None] * HEAD_SIZE + d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST:  # the interpreter's tl.dot is wrong on bf16 operands
        q = q.to(tl.float32)
    if HAS_ALIBI:
        slopes = tl.load(alibi_ptr + heads, mask=g_mask, other=0.0)

    m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_PAD], tl.float32)
    num_blocks = tl.cdiv(seq_len, BLOCK_SIZE)
    for b in range(0, num_blocks):
        block = tl.load(block_tables_ptr + seq * stride_bt_seq + b).to(tl.int64)
        pos = b * BLOCK_SIZE + t
        t_mask = pos < seq_len
        k = tl.load(k_cache_ptr + block * stride_k_block + kv_head * stride_k_head
                    + d[:, None] * BLOCK_SIZE + t[None, :],
                    mask=d_mask[:, None] & t_mask[None, :], other=0.0)
        v = tl.load(v_cache_ptr + block * stride_v_block + kv_head * stride_v_head
                    + t[:, None] * HEAD_SIZE + d[None, :],
                    mask=t_mask[:, None] & d_mask[None, :], other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, k) * scale
        if HAS_ALIBI:
            s += slopes[:, None] * (pos - seq_len + 1).to(tl.float32)[None, :]
        s = tl.where(t_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        correction = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l = l * correction + tl.sum(p, axis=1)
        acc = acc * correction[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new

    acc = acc / tl.where(l > 0, l, 1.0)[:, None]
    tl.store(out_ptr + seq * stride_o_token + heads[:, None] * HEAD_SIZE + d[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :])


def paged_decode_attention(out: torch.Tensor, query: torch.Tensor, key_cache: torch.Tensor,
                           value_cache: torch.Tensor, block_tables: torch.Tensor,
                           seq_lens: torch.Tensor, scale: float,
                           alibi_slopes: torch.Tensor | None = None) -> None:
    """out[s] = attention of query[s] ([num_heads, head_size]) over the first
    seq_lens[s] tokens of sequence s in the paged cache."""
    num_seqs, num_heads, head_size = query.shape
    num_kv_heads, _, block_size = key_cache.shape[1:]
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
    if block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")
    if query.stride(2) != 1 or query.stride(1) != head_size or out.stride(1) != head_size:
        raise ValueError("query and out must be contiguous within a token")
    group = num_heads // num_kv_heads
    # tl.dot needs each dimension >= 16 on GPUs.
    group_pad = max(16, triton.next_power_of_2(group))
    _paged_decode_kernel[(num_seqs, num_kv_heads)](
        out, query, key_cache, value_cache, block_tables, seq_lens,
        alibi_slopes if alibi_slopes is not None else query,
        scale,
        query.stride(0), out.stride(0), block_tables.stride(0),
        key_cache.stride(0), key_cache.stride(1), value_cache.stride(0), value_cache.stride(1),
        GROUP=group, GROUP_PAD=group_pad, HEAD_SIZE=head_size,
        HEAD_PAD=max(16, triton.next_power_of_2(head_size)), BLOCK_SIZE=block_size,
        HAS_ALIBI=alibi_slopes is not None, UPCAST=query.device.type == "cpu",
    )
