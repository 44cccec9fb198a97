"""Attention with RMS norms on the queries and keys before rotary: per head
(Qwen3, Qwen3-MoE: weights of head_size) or over the whole projection
(OLMoE: q_size and kv_size weights, and an optional clip of q/k/v)."""
from __future__ import annotations

import torch

from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.models.llama import LlamaAttention


class PerHeadQKNormAttention(LlamaAttention):
    def __init__(self, config, dtype: torch.dtype, backend, qkv_bias: bool) -> None:
        super().__init__(config, dtype, backend, qkv_bias)
        self.q_norm = RMSNorm(self.head_size, config.rms_norm_eps, dtype)
        self.k_norm = RMSNorm(self.head_size, config.rms_norm_eps, dtype)

    def normalize_qkv(self, q, k, v):
        # reshape copies the strided q/k slices of the fused projection
        q = self.q_norm(q.reshape(-1, self.head_size)).view(-1, self.q_size)
        k = self.k_norm(k.reshape(-1, self.head_size)).view(-1, self.kv_size)
        return q, k, v


class FullQKNormAttention(LlamaAttention):
    # the norms span every head: one rank's heads cannot be normalised alone
    splits_across_tensor_ranks = False

    def __init__(self, config, dtype: torch.dtype, backend, qkv_bias: bool) -> None:
        super().__init__(config, dtype, backend, qkv_bias)
        self.q_norm = RMSNorm(self.q_size, config.rms_norm_eps, dtype)
        self.k_norm = RMSNorm(self.kv_size, config.rms_norm_eps, dtype)
        self.clip_qkv = getattr(config, "clip_qkv", None)

    def normalize_qkv(self, q, k, v):
        q, k = self.q_norm(q), self.k_norm(k)
        if self.clip_qkv is not None:
            q = q.clamp(-self.clip_qkv, self.clip_qkv)
            k = k.clamp(-self.clip_qkv, self.clip_qkv)
            v = v.clamp(-self.clip_qkv, self.clip_qkv)
        return q, k, v
