"""Qwen3-MoE: per-head q/k RMS norms before rotary, no q/k/v biases,
sparse layers as Qwen2-MoE chooses them, no shared expert."""
from __future__ import annotations

import torch
from torch import nn

from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaMLP
from vllm.model_executor.models.moe_block import SparseMoeBlock
from vllm.model_executor.models.qk_norm_attention import PerHeadQKNormAttention
from vllm.model_executor.models.qwen2_moe import is_sparse_layer


class Qwen3MoeDecoderLayer(LlamaDecoderLayer):
    attention_cls = PerHeadQKNormAttention

    def make_mlp(self, config, dtype: torch.dtype, layer_idx: int) -> nn.Module:
        if not is_sparse_layer(config, layer_idx):
            return LlamaMLP(config, dtype)
        return SparseMoeBlock(config, dtype, config.num_experts, config.num_experts_per_tok,
                              config.moe_intermediate_size,
                              renormalize=bool(getattr(config, "norm_topk_prob", True)))


class Qwen3MoeForCausalLM(LlamaForCausalLM):
    decoder_layer_cls = Qwen3MoeDecoderLayer
