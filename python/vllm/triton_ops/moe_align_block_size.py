"""moe_align_block_size in Triton (VLLM_ENABLE_MOE_ALIGN_BLOCK_SIZE_TRITON=1),
the same contract as the _moe_C op: runs on GPUs, and on CPU tensors under
TRITON_INTERPRET=1 (how the tests check it against the op).

Three launches: one program per expert counts its choices; one program
turns the counts into block-padded offsets (and the block -> expert map);
one program per expert writes its choices' flat indices in order, a
running count plus a prefix sum within each tile keeping the order stable."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _count_kernel(ids_ptr, counts_ptr, numel, TILE: tl.constexpr):
    expert = tl.program_id(0)
    total = 0
    for start in range(0, numel, TILE):
        offs = start + tl.arange(0, TILE)
        ids = tl.load(ids_ptr + offs, mask=offs < numel, other=-1)
        total += tl.sum((ids == expert).to(tl.int32))
    tl.store(counts_ptr + expert, total)


@triton.jit
def _offsets_kernel(counts_ptr, offsets_ptr, experts_ids_ptr, post_pad_ptr, num_experts,
                    block_size):
    offset = 0
    for expert in range(0, num_experts):
        count = tl.load(counts_ptr + expert)
        padded = tl.cdiv(count, block_size) * block_size
        tl.store(offsets_ptr + expert, offset)
        for b in range(0, padded // block_size):
            tl.store(experts_ids_ptr + offset // block_size + b, expert)
        offset += padded
    tl.store(post_pad_ptr, offset)


@triton.jit
def _scatter_kernel(ids_ptr, offsets_ptr, sorted_ptr, numel, TILE: tl.constexpr):
    expert = tl.program_id(0)
    position = tl.load(offsets_ptr + expert)
    for start in range(0, numel, TILE):
        offs = start + tl.arange(0, TILE)
        ids = tl.load(ids_ptr + offs, mask=offs < numel, other=-1)
        hit = (ids == expert).to(tl.int32)
        rank = tl.cumsum(hit, axis=0) - 1
        tl.store(sorted_ptr + position + rank, offs.to(tl.int32), mask=hit > 0)
        position += tl.sum(hit)


def moe_align_block_size_triton(topk_ids: torch.Tensor, num_experts: int, block_size: int,
                                sorted_token_ids: torch.Tensor, experts_ids: torch.Tensor,
                                num_tokens_post_pad: torch.Tensor) -> None:
    numel = topk_ids.numel()
    needed = numel + num_experts * (block_size - 1)
    if sorted_token_ids.numel() < needed or experts_ids.numel() < -(-needed // block_size):
        raise ValueError(f"moe_align_block_size: buffers too small for {numel} choices over "
                         f"{num_experts} experts in blocks of {block_size}")
    if numel and (int(topk_ids.min()) < 0 or int(topk_ids.max()) >= num_experts):
        raise ValueError(f"moe_align_block_size: topk_ids outside [0, {num_experts})")
    ids = topk_ids.reshape(-1)
    counts = torch.empty(num_experts, dtype=torch.int32, device=ids.device)
    offsets = torch.empty(num_experts, dtype=torch.int32, device=ids.device)
    sorted_token_ids.fill_(numel)
    experts_ids.fill_(-1)
    tile = 256
    _count_kernel[(num_experts,)](ids, counts, numel, TILE=tile)
    _offsets_kernel[(1,)](counts, offsets, experts_ids, num_tokens_post_pad, num_experts,
                          block_size)
    _scatter_kernel[(num_experts,)](ids, offsets, sorted_token_ids, numel, TILE=tile)
