"""The experts of a MoE layer: every token through the k experts its
routing chose, weighted and summed. vLLM's layout: w1 [E, 2N, K] (each
expert's gate rows, then its up rows), w2 [E, K, N].

The computation is grouped by expert: the (token, choice) pairs are sorted
by expert, and each expert that received any runs one gate/up projection,
activation and down projection over all of its tokens, so its weights are
read once per step and an expert nobody chose is never read (batch-1 decode
reads k experts, not E). Each expert's output is scaled by its routing
weight and added into an fp32 accumulator in expert order, as transformers
adds them."""
from __future__ import annotations

from typing import Callable

import torch

from vllm import envs
from vllm.model_executor.layers.activation import ActAndMul, gated_projection
from vllm.model_executor.layers.linear import apply_linear

# vLLM's activation names for MoE layers -> our gated activation kernels
_MOE_ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_pytorch_tanh",
                    "gelu_tanh": "gelu_pytorch_tanh"}


def moe_activation(name: str) -> ActAndMul:
    if name not in _MOE_ACTIVATIONS:
        raise ValueError(f"MoE activation {name!r} is not supported "
                         f"({', '.join(_MOE_ACTIVATIONS)})")
    return ActAndMul(_MOE_ACTIVATIONS[name])


def check_expert_weights(w1: torch.Tensor, w2: torch.Tensor,
                         hidden_size: int | None = None) -> tuple[int, int, int]:
    """(E, N, K) of w1 [E, 2N, K] and w2 [E, K, N], or a ValueError naming
    both shapes."""
    if w1.dim() != 3 or w2.dim() != 3 or w1.shape[1] % 2:
        raise ValueError(f"w1 must be [E, 2N, K] and w2 [E, K, N]; got w1 {tuple(w1.shape)}, "
                         f"w2 {tuple(w2.shape)}")
    e, n, k = w1.shape[0], w1.shape[1] // 2, w1.shape[2]
    if tuple(w2.shape) != (e, k, n):
        raise ValueError(f"w1 {tuple(w1.shape)} is [E={e}, 2N={2 * n}, K={k}], so w2 must be "
                         f"[{e}, {k}, {n}]; got w2 {tuple(w2.shape)}")
    if hidden_size is not None and hidden_size != k:
        raise ValueError(f"hidden_states have {hidden_size} features but w1 {tuple(w1.shape)} "
                         f"takes K={k}")
    return e, n, k


def _check_routing(hidden_states: torch.Tensor, topk_weights: torch.Tensor,
                   topk_ids: torch.Tensor) -> None:
    if hidden_states.dim() != 2:
        raise ValueError(f"hidden_states must be [tokens, hidden], got {tuple(hidden_states.shape)}")
    m = hidden_states.shape[0]
    if topk_ids.dim() != 2 or topk_ids.shape[0] != m or topk_weights.shape != topk_ids.shape:
        raise ValueError(f"topk_weights {tuple(topk_weights.shape)} and topk_ids "
                         f"{tuple(topk_ids.shape)} must both be [{m}, k] for {m} tokens")


# run_expert(e, rows of x) -> those rows' outputs of expert e (before weighting)
ExpertFn = Callable[[int, torch.Tensor], torch.Tensor]


def grouped_expert_pass(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                        num_experts: int, run_expert: ExpertFn,
                        apply_router_weight_on_input: bool = False) -> torch.Tensor:
    """sum_j weight[t, j] * expert_{ids[t, j]}(x[t]) for every token t, each
    expert run once over its tokens; returns fp32 [M, H]. An id of -1 (an
    expert on another rank) adds nothing."""
    m, k = topk_ids.shape
    flat_ids = topk_ids.reshape(-1).long()
    if flat_ids.numel() and (int(flat_ids.min()) < -1 or int(flat_ids.max()) >= num_experts):
        raise ValueError(f"topk_ids must lie in [0, {num_experts}), got "
                         f"[{int(flat_ids.min())}, {int(flat_ids.max())}]")
    order = torch.argsort(flat_ids, stable=True)
    counts = torch.bincount(flat_ids + 1, minlength=num_experts + 1).tolist()
    tokens = order // k
    weights = topk_weights.reshape(-1)[order].float().unsqueeze(1)
    acc = torch.zeros(m, x.shape[1], dtype=torch.float32, device=x.device)
    start = counts.pop(0)  # the -1s sort first
    for expert, count in enumerate(counts):
        if count == 0:
            continue
        rows = tokens[start:start + count]
        w = weights[start:start + count]
        start += count
        xe = x[rows]
        if apply_router_weight_on_input:
            acc.index_add_(0, rows, run_expert(expert, (xe * w).to(x.dtype)).float())
        else:
            acc.index_add_(0, rows, run_expert(expert, xe) * w)
    return acc


def plain_expert_fn(w1: torch.Tensor, w2: torch.Tensor, act: ActAndMul,
                    w1_packed: torch.Tensor | None = None,
                    w2_packed: torch.Tensor | None = None) -> ExpertFn:
    """An expert over stacked weights, with their packed copies (FusedMoE's
    [E, ...] stacks) where the layer made them."""
    def run(expert: int, xe: torch.Tensor) -> torch.Tensor:
        p1 = w1_packed[expert] if w1_packed is not None else None
        p2 = w2_packed[expert] if w2_packed is not None else None
        h = gated_projection(xe, w1[expert], None, p1, act)
        return apply_linear(h, w2[expert], None, p2)
    return run


def fused_experts(hidden_states: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                  topk_weights: torch.Tensor, topk_ids: torch.Tensor, inplace: bool = False,
                  activation: str = "silu", apply_router_weight_on_input: bool = False,
                  global_num_experts: int = -1, expert_map: torch.Tensor | None = None,
                  *, w1_packed: torch.Tensor | None = None,
                  w2_packed: torch.Tensor | None = None) -> torch.Tensor:
    """vLLM's fused_experts: [M, K] hidden states through their chosen
    experts. `expert_map` (expert parallelism) maps global expert ids to
    this rank's (-1: not here; those choices add nothing). Token counts
    above VLLM_FUSED_MOE_CHUNK_SIZE run in chunks. `inplace` writes the
    result into hidden_states. On GPUs the Triton fused-MoE GEMM runs
    (triton_experts); on CPU the grouped pass over our kernels."""
    e, _, _ = check_expert_weights(w1, w2, hidden_states.shape[-1])
    _check_routing(hidden_states, topk_weights, topk_ids)
    total = global_num_experts if global_num_experts > 0 else e
    if topk_weights.shape[1] > total:
        raise ValueError(f"top-k {topk_weights.shape[1]} exceeds the {total} experts")
    act = moe_activation(activation)
    if hidden_states.device.type == "cuda":
        from vllm.model_executor.layers.fused_moe.triton_experts import fused_experts_triton

        def run_chunk(x, weights, ids):
            return fused_experts_triton(x, w1, w2, weights, ids, act,
                                        apply_router_weight_on_input, expert_map,
                                        global_num_experts)
    else:
        if expert_map is not None:
            topk_ids = expert_map[topk_ids.long()]  # -1: another rank's expert
        run = plain_expert_fn(w1, w2, act, w1_packed, w2_packed)

        def run_chunk(x, weights, ids):
            return grouped_expert_pass(x, weights, ids, e, run, apply_router_weight_on_input)
    out = hidden_states if inplace else torch.empty_like(hidden_states)
    chunk = max(1, envs.VLLM_FUSED_MOE_CHUNK_SIZE)
    for begin in range(0, hidden_states.shape[0], chunk):
        end = begin + chunk
        out[begin:end].copy_(run_chunk(hidden_states[begin:end], topk_weights[begin:end],
                                       topk_ids[begin:end]))
    return out


def fused_moe(hidden_states: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
              gating_output: torch.Tensor, topk: int, renormalize: bool,
              inplace: bool = False, activation: str = "silu",
              use_grouped_topk: bool = False, num_expert_group: int | None = None,
              topk_group: int | None = None, custom_routing_function: Callable | None = None,
              scoring_func: str = "softmax", routed_scaling_factor: float = 1.0,
              e_score_correction_bias: torch.Tensor | None = None,
              apply_router_weight_on_input: bool = False, global_num_experts: int = -1,
              expert_map: torch.Tensor | None = None) -> torch.Tensor:
    """vLLM's fused_moe: routing (select_experts) then fused_experts."""
    from vllm.model_executor.layers.fused_moe.routing import select_experts
    check_expert_weights(w1, w2, hidden_states.shape[-1])
    weights, ids = select_experts(hidden_states, gating_output, topk, renormalize,
                                  use_grouped_topk, num_expert_group, topk_group,
                                  custom_routing_function, scoring_func,
                                  routed_scaling_factor, e_score_correction_bias)
    return fused_experts(hidden_states, w1, w2, weights, ids, inplace, activation,
                         apply_router_weight_on_input, global_num_experts, expert_map)
