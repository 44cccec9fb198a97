"""Attention with RMS norms on the queries and keys before rotary: per head
(Qwen3, Qwen3-MoE: weights of head_size) or over the whole projection
(OLMoE: weights over every head's q and k, and an optional clip of q/k/v)."""
from __future__ import annotations

import torch

from vllm.distributed.parallel_state import get_tp_group
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.tensor_parallel import tp_rank_and_size
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
    """With tensor parallelism a rank holds only its heads' part of q and k,
    while the norms span every head: each rank gathers the whole projection
    (all-gather, in rank order), normalises it and keeps its own columns,
    as vLLM's OLMoE does. KV heads replicated across ranks would appear
    twice in the gathered k: such splits are refused."""

    def __init__(self, config, dtype: torch.dtype, backend, qkv_bias: bool) -> None:
        super().__init__(config, dtype, backend, qkv_bias)
        self.tp_rank, self.tp_size = tp_rank_and_size()
        all_kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        if self.tp_size > 1 and all_kv_heads % self.tp_size:
            raise ValueError(f"tensor parallelism: q/k norms over the whole projection need "
                             f"the KV heads ({all_kv_heads}) to split evenly over "
                             f"tensor_parallel_size {self.tp_size}, none replicated")
        self.q_norm = RMSNorm(config.num_attention_heads * self.head_size, config.rms_norm_eps,
                              dtype)
        self.k_norm = RMSNorm(all_kv_heads * self.head_size, config.rms_norm_eps, dtype)
        self.clip_qkv = getattr(config, "clip_qkv", None)

    def _norm_over_all_heads(self, x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
        if self.tp_size == 1:
            return norm(x)
        width = x.shape[-1]
        whole = get_tp_group().all_gather(x.contiguous(), dim=-1)
        return norm(whole)[:, self.tp_rank * width:(self.tp_rank + 1) * width]

    def normalize_qkv(self, q, k, v):
        q, k = self._norm_over_all_heads(q, self.q_norm), self._norm_over_all_heads(k, self.k_norm)
        if self.clip_qkv is not None:
            q = q.clamp(-self.clip_qkv, self.clip_qkv)
            k = k.clamp(-self.clip_qkv, self.clip_qkv)
            v = v.clamp(-self.clip_qkv, self.clip_qkv)
        return q, k, v
