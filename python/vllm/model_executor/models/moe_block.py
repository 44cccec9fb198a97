"""The sparse feed-forward block of the MoE families: a router (a linear
layer to one logit per expert), the routed experts (FusedMoE), and for
Qwen-MoE a shared expert every token also takes, scaled by a sigmoid gate."""
from __future__ import annotations

import torch
from torch import nn

from vllm.distributed.communication_op import reduce_over_tensor_ranks
from vllm.model_executor.layers.fused_moe import FusedMoE
from vllm.model_executor.layers.linear import Linear
from vllm.model_executor.models.llama import LlamaMLP

# checkpoint names of an expert's projections: Mixtral's, everyone else's
MIXTRAL_EXPERT_NAMES = {"w1": "w1", "w2": "w2", "w3": "w3"}
HF_EXPERT_NAMES = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}


class SparseMoeBlock(nn.Module):
    # experts split by intermediate slices, the router replicated
    splits_across_tensor_ranks = True

    def __init__(self, config, dtype: torch.dtype, num_experts: int, top_k: int,
                 intermediate_size: int, renormalize: bool,
                 expert_names: dict[str, str] = HF_EXPERT_NAMES,
                 shared_expert_intermediate_size: int = 0) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.gate = Linear(hidden, num_experts, bias=False, dtype=dtype)
        # With tensor parallelism the routed experts and the shared expert
        # each give this rank's partial sum; the gate scales a token's
        # partial sums alike, so the block all-reduces their sum once.
        self.experts = FusedMoE(num_experts, top_k, hidden, intermediate_size, dtype,
                                reduce_results=False, renormalize=renormalize,
                                activation=getattr(config, "hidden_act", "silu"))
        self.experts._checkpoint_leaf.update(expert_names)
        self.shared_expert = None
        if shared_expert_intermediate_size:
            self.shared_expert = LlamaMLP(config, dtype, shared_expert_intermediate_size,
                                          reduce_results=False)
            self.shared_expert_gate = Linear(hidden, 1, bias=False, dtype=dtype)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.experts(hidden, self.gate(hidden))
        if self.shared_expert is not None:
            shared = self.shared_expert(hidden)
            out = out + torch.sigmoid(self.shared_expert_gate(hidden)) * shared
        return reduce_over_tensor_ranks(out)

