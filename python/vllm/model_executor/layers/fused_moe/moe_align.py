"""vLLM's moe_align_block_size: the (token, choice) pairs grouped by expert,
each expert's run padded to whole blocks of `block_size`, the layout a
blocked MoE GEMM (the Triton kernel) walks."""
from __future__ import annotations

import torch

from vllm import _custom_ops as ops
from vllm import envs


def moe_align_block_size(topk_ids: torch.Tensor, block_size: int, num_experts: int,
                         expert_map: torch.Tensor | None = None, pad_sorted_ids: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (sorted_token_ids, expert_ids, num_tokens_post_pad):
    flat indices into topk_ids by expert, padding = topk_ids.numel(); the
    expert of each block (-1 past the end, or where `expert_map` maps the
    expert to another rank); the padded length as a 1-element tensor.
    `pad_sorted_ids` rounds the buffer up to a whole block."""
    max_padded = topk_ids.numel() + num_experts * (block_size - 1)
    if pad_sorted_ids:
        max_padded = -(-max_padded // block_size) * block_size
    device = topk_ids.device
    sorted_ids = torch.empty(max_padded, dtype=torch.int32, device=device)
    expert_ids = torch.empty(-(-max_padded // block_size), dtype=torch.int32, device=device)
    num_tokens_post_pad = torch.empty(1, dtype=torch.int32, device=device)
    ids = topk_ids if topk_ids.is_contiguous() else topk_ids.contiguous()
    if envs.VLLM_ENABLE_MOE_ALIGN_BLOCK_SIZE_TRITON:
        from vllm.triton_ops.moe_align_block_size import moe_align_block_size_triton
        moe_align_block_size_triton(ids, num_experts, block_size, sorted_ids, expert_ids,
                                    num_tokens_post_pad)
    else:
        ops.moe_align_block_size(ids, num_experts, block_size, sorted_ids, expert_ids,
                                 num_tokens_post_pad)
    if expert_map is not None:
        valid = expert_ids >= 0
        expert_ids = torch.where(valid, expert_map[expert_ids.clamp(min=0).long()].int(),
                                 expert_ids)
    return sorted_ids, expert_ids, num_tokens_post_pad
