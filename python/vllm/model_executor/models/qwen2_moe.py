"""Qwen2-MoE (Qwen1.5-MoE): Qwen2's attention (q/k/v biases); layer i is
sparse when it is not in mlp_only_layers and (i + 1) % decoder_sparse_step
== 0, else a dense MLP. A sparse layer adds a shared expert every token
takes, scaled by sigmoid(shared_expert_gate(x))."""
from __future__ import annotations

import torch
from torch import nn

from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaMLP
from vllm.model_executor.models.moe_block import SparseMoeBlock


def is_sparse_layer(config, layer_idx: int) -> bool:
    step = getattr(config, "decoder_sparse_step", 1) or 1
    return (layer_idx not in (getattr(config, "mlp_only_layers", None) or [])
            and config.num_experts > 0 and (layer_idx + 1) % step == 0)


class Qwen2MoeDecoderLayer(LlamaDecoderLayer):
    def make_mlp(self, config, dtype: torch.dtype, layer_idx: int) -> nn.Module:
        if not is_sparse_layer(config, layer_idx):
            return LlamaMLP(config, dtype)
        return SparseMoeBlock(config, dtype, config.num_experts, config.num_experts_per_tok,
                              config.moe_intermediate_size,
                              renormalize=bool(getattr(config, "norm_topk_prob", False)),
                              shared_expert_intermediate_size=getattr(
                                  config, "shared_expert_intermediate_size", 0))


class Qwen2MoeForCausalLM(LlamaForCausalLM):
    qkv_bias = True
    decoder_layer_cls = Qwen2MoeDecoderLayer
