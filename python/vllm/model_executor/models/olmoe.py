"""OLMoE: q/k RMS norms over the whole projections (and an optional q/k/v
clip) before rotary; every layer sparse, top-k of 64 experts."""
from __future__ import annotations

import torch
from torch import nn

from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM
from vllm.model_executor.models.moe_block import SparseMoeBlock
from vllm.model_executor.models.qk_norm_attention import FullQKNormAttention


class OlmoeDecoderLayer(LlamaDecoderLayer):
    attention_cls = FullQKNormAttention

    def make_mlp(self, config, dtype: torch.dtype, layer_idx: int) -> nn.Module:
        return SparseMoeBlock(config, dtype, config.num_experts, config.num_experts_per_tok,
                              config.intermediate_size,
                              renormalize=bool(getattr(config, "norm_topk_prob", False)))


class OlmoeForCausalLM(LlamaForCausalLM):
    decoder_layer_cls = OlmoeDecoderLayer
