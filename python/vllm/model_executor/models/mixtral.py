"""Mixtral: the Mistral decoder with a sparse MoE block (top-2 of 8 experts,
weights renormalised) in place of the MLP, named block_sparse_moe."""
from __future__ import annotations

import torch
from torch import nn

from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM
from vllm.model_executor.models.moe_block import MIXTRAL_EXPERT_NAMES, SparseMoeBlock


class MixtralDecoderLayer(LlamaDecoderLayer):
    mlp_name = "block_sparse_moe"

    def make_mlp(self, config, dtype: torch.dtype, layer_idx: int) -> nn.Module:
        return SparseMoeBlock(config, dtype, config.num_local_experts,
                              config.num_experts_per_tok, config.intermediate_size,
                              renormalize=True, expert_names=MIXTRAL_EXPERT_NAMES)


class MixtralForCausalLM(LlamaForCausalLM):
    decoder_layer_cls = MixtralDecoderLayer
