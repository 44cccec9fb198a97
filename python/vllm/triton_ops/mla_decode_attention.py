"""Absorbed MLA decode in Triton over the paged latent cache [num_blocks,
block_size, kv_lora_rank + rope_dim], for GPUs; runs on CPU tensors under
TRITON_INTERPRET=1 (how the tests check it).

One program per (sequence, block of up to HEADS_PER_PROGRAM query heads):
every head attends over the same latents, so a block's latents are loaded
once for all the program's heads. Scores are two tl.dots, the latent part
[heads, lora] x [lora, block] and the rotary part [heads, rope] x [rope,
block] (each padded to a power of two on its own, so 512 + 64 does not pay
for 1024), then an online softmax and tl.dot of the weights with the
block's latents: the output stays in latent space ([heads, lora]); the
caller applies W_UV.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _mla_decode_kernel(
    out_ptr, q_ptr, cache_ptr, block_tables_ptr, seq_lens_ptr, scale,
    stride_q_token, stride_o_token, stride_bt_seq, stride_c_block,
    NUM_HEADS: tl.constexpr, HEADS_PAD: tl.constexpr, LORA: tl.constexpr,
    LORA_PAD: tl.constexpr, ROPE: tl.constexpr, ROPE_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, UPCAST: tl.constexpr,
):
    seq = tl.program_id(0)
    head_block = tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + seq)
    latent_dim = LORA + ROPE

    h = head_block * HEADS_PAD + tl.arange(0, HEADS_PAD)
    c = tl.arange(0, LORA_PAD)
    r = tl.arange(0, ROPE_PAD)
    t = tl.arange(0, BLOCK_SIZE)
    h_mask = h < NUM_HEADS
    c_mask = c < LORA
    r_mask = r < ROPE

    q_rows = q_ptr + seq * stride_q_token + h[:, None] * latent_dim
    q_lat = tl.load(q_rows + c[None, :], mask=h_mask[:, None] & c_mask[None, :], other=0.0)
    q_pe = tl.load(q_rows + LORA + r[None, :], mask=h_mask[:, None] & r_mask[None, :], other=0.0)
    if UPCAST:  # the interpreter's tl.dot is wrong on bf16 operands
        q_lat = q_lat.to(tl.float32)
        q_pe = q_pe.to(tl.float32)

    m = tl.full([HEADS_PAD], float("-inf"), tl.float32)
    l = tl.zeros([HEADS_PAD], tl.float32)
    acc = tl.zeros([HEADS_PAD, LORA_PAD], tl.float32)
    for b in range(0, tl.cdiv(seq_len, BLOCK_SIZE)):
        block = tl.load(block_tables_ptr + seq * stride_bt_seq + b).to(tl.int64)
        pos = b * BLOCK_SIZE + t
        t_mask = pos < seq_len
        rows = cache_ptr + block * stride_c_block + t[:, None] * latent_dim
        lat = tl.load(rows + c[None, :], mask=t_mask[:, None] & c_mask[None, :], other=0.0)
        pe = tl.load(rows + LORA + r[None, :], mask=t_mask[:, None] & r_mask[None, :],
                     other=0.0)
        if UPCAST:
            lat = lat.to(tl.float32)
            pe = pe.to(tl.float32)
        s = (tl.dot(q_lat, tl.trans(lat)) + tl.dot(q_pe, tl.trans(pe))) * scale
        s = tl.where(t_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        correction = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l = l * correction + tl.sum(p, axis=1)
        acc = acc * correction[:, None] + tl.dot(p.to(lat.dtype), lat)
        m = m_new

    acc = acc / tl.where(l > 0, l, 1.0)[:, None]
    tl.store(out_ptr + seq * stride_o_token + h[:, None] * LORA + c[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=h_mask[:, None] & c_mask[None, :])


def mla_decode_attention(out: torch.Tensor, query: torch.Tensor, kv_cache: torch.Tensor,
                         block_tables: torch.Tensor, seq_lens: torch.Tensor,
                         scale: float) -> None:
    """mla_decode_kvcache's contract: query [num_seqs, num_heads, lora +
    rope] (absorbed), out [num_seqs, num_heads, lora]."""
    num_seqs, num_heads, latent_dim = query.shape
    _, block_size, cache_dim = kv_cache.shape
    lora = out.shape[2]
    rope = latent_dim - lora
    if cache_dim != latent_dim or rope < 1:
        raise ValueError(f"query heads of {latent_dim}, cached latents of {cache_dim} and "
                         f"outputs of {lora} do not make an MLA (lora + rope) split")
    if block_size & (block_size - 1) or block_size < 16:
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    if not (query.stride(2) == 1 and query.stride(1) == latent_dim and out.stride(2) == 1
            and out.stride(1) == lora and kv_cache.is_contiguous()):
        raise ValueError("query, out and kv_cache must be contiguous within a token")
    heads_pad = 16  # tl.dot needs each dimension >= 16 on GPUs
    _mla_decode_kernel[(num_seqs, triton.cdiv(num_heads, heads_pad))](
        out, query, kv_cache, block_tables, seq_lens, scale,
        query.stride(0), out.stride(0), block_tables.stride(0), kv_cache.stride(0),
        NUM_HEADS=num_heads, HEADS_PAD=heads_pad, LORA=lora,
        LORA_PAD=max(16, triton.next_power_of_2(lora)), ROPE=rope,
        ROPE_PAD=max(16, triton.next_power_of_2(rope)), BLOCK_SIZE=block_size,
        UPCAST=query.device.type == "cpu",
    )
