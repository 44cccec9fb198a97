"""Expert selection: which k experts each token goes to, and with what
weight. `fused_topk` (softmax, then top k: Mixtral, Qwen-MoE, OLMoE) runs the
`_moe_C.topk_softmax` kernel; `grouped_topk` (DeepSeek-V2/V3: the best
groups of experts first, softmax or sigmoid scores, an optional correction
bias that chooses but does not weight) is a few torch ops. Both return fp32
weights and int32 ids, as vLLM's do."""
from __future__ import annotations

from typing import Callable

import torch

from vllm import _custom_ops as ops


def _check_topk(topk: int, num_experts: int) -> None:
    if not 1 <= topk <= num_experts:
        raise ValueError(f"top-k {topk} must lie in [1, {num_experts}], the number of experts")


def fused_topk(hidden_states: torch.Tensor, gating_output: torch.Tensor, topk: int,
               renormalize: bool, indices_type: torch.dtype | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax over each token's router logits (fp32), its top `topk`
    experts, their weights renormalised to sum to 1 if asked. Returns
    (topk_weights fp32 [M, k], topk_ids [M, k] int32 or `indices_type`,
    token_expert_indices int32 [M, k])."""
    if hidden_states.shape[0] != gating_output.shape[0]:
        raise ValueError(f"{hidden_states.shape[0]} tokens but gating_output has "
                         f"{gating_output.shape[0]} rows")
    m, num_experts = gating_output.shape
    _check_topk(topk, num_experts)
    device = gating_output.device
    weights = torch.empty(m, topk, dtype=torch.float32, device=device)
    ids = torch.empty(m, topk, dtype=indices_type or torch.int32, device=device)
    token_expert_indices = torch.empty(m, topk, dtype=torch.int32, device=device)
    if ops.has_kernel("_moe_C::topk_softmax", device):
        ops.topk_softmax(weights, ids, token_expert_indices, gating_output)
    else:  # a device without the kernel yet: the same result from torch ops
        values, indices = gating_output.float().softmax(-1).topk(topk, dim=-1)
        weights.copy_(values)
        ids.copy_(indices)
        token_expert_indices.copy_(torch.arange(topk, device=device).mul(m).unsqueeze(0)
                                   + torch.arange(m, device=device).unsqueeze(1))
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids, token_expert_indices


def grouped_topk(hidden_states: torch.Tensor, gating_output: torch.Tensor, topk: int,
                 renormalize: bool, num_expert_group: int = 0, topk_group: int = 0,
                 scoring_func: str = "softmax", routed_scaling_factor: float = 1.0,
                 e_score_correction_bias: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek's group-limited routing. The experts form `num_expert_group`
    equal groups; each token keeps its best `topk_group` groups, then its
    best `topk` experts within them. A group's score is its best expert's,
    or with `e_score_correction_bias` the sum of its best two biased scores;
    the bias steers the choice, the weights are the unbiased scores."""
    if hidden_states.shape[0] != gating_output.shape[0]:
        raise ValueError(f"{hidden_states.shape[0]} tokens but gating_output has "
                         f"{gating_output.shape[0]} rows")
    m, num_experts = gating_output.shape
    _check_topk(topk, num_experts)
    if num_expert_group < 1 or num_experts % num_expert_group:
        raise ValueError(f"{num_experts} experts do not split into {num_expert_group} groups")
    if not 1 <= topk_group <= num_expert_group:
        raise ValueError(f"topk_group {topk_group} must lie in [1, {num_expert_group}]")
    if topk > topk_group * (num_experts // num_expert_group):
        raise ValueError(f"top-k {topk} exceeds the {topk_group} groups' experts")
    logits = gating_output.float()
    if scoring_func == "softmax":
        scores = logits.softmax(dim=-1)
    elif scoring_func == "sigmoid":
        scores = logits.sigmoid()
    else:
        raise ValueError(f"scoring_func {scoring_func!r} is not 'softmax' or 'sigmoid'")
    grouped = scores.view(m, num_expert_group, -1)
    if e_score_correction_bias is not None:
        choice = scores + e_score_correction_bias.float().unsqueeze(0)
        group_scores = choice.view(m, num_expert_group, -1).topk(2, dim=-1).values.sum(-1)
    else:
        choice = scores
        group_scores = grouped.max(dim=-1).values
    best_groups = group_scores.topk(topk_group, dim=-1, sorted=False).indices
    group_mask = torch.zeros_like(group_scores).scatter_(1, best_groups, 1.0)
    expert_mask = group_mask.unsqueeze(-1).expand_as(grouped).reshape(m, num_experts)
    masked = choice.masked_fill(expert_mask == 0, float("-inf"))
    ids = masked.topk(topk, dim=-1).indices
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    if routed_scaling_factor != 1.0:
        weights = weights * routed_scaling_factor
    return weights, ids.to(torch.int32)


def select_experts(hidden_states: torch.Tensor, router_logits: torch.Tensor, top_k: int,
                   renormalize: bool, use_grouped_topk: bool = False,
                   num_expert_group: int | None = None, topk_group: int | None = None,
                   custom_routing_function: Callable | None = None,
                   scoring_func: str = "softmax", routed_scaling_factor: float = 1.0,
                   e_score_correction_bias: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The routing a FusedMoE layer was configured with: (weights, ids)."""
    if use_grouped_topk:
        if num_expert_group is None or topk_group is None:
            raise ValueError("grouped top-k routing needs num_expert_group and topk_group")
        return grouped_topk(hidden_states, router_logits, top_k, renormalize,
                            num_expert_group, topk_group, scoring_func,
                            routed_scaling_factor, e_score_correction_bias)
    if custom_routing_function is not None:
        weights, ids = custom_routing_function(hidden_states, router_logits, top_k, renormalize)
        return weights.float(), ids.to(torch.int32)
    if scoring_func != "softmax":
        raise ValueError(f"scoring_func {scoring_func!r} needs use_grouped_topk=True")
    weights, ids, _ = fused_topk(hidden_states, router_logits, top_k, renormalize)
    if routed_scaling_factor != 1.0:
        weights = weights * routed_scaling_factor
    return weights, ids
