"""TRITON_MLA: for MLA layers (DeepSeek-V2/V3), decode steps through the
Triton MLA decode kernel (vllm.triton_ops.mla_decode_attention); prefill
steps and the latent-cache writes stay our kernels' (there is no Triton MLA
prefill kernel here). Layers that are not MLA refuse it at load.

Triton compiles for GPUs; on CPU it runs only under its interpreter
(TRITON_INTERPRET=1 before triton is first imported): correct and slow."""
from __future__ import annotations

import torch

from vllm.attention.backends.triton_attn import TritonAttentionBackend


class TritonMLABackend:
    name = "TRITON_MLA"
    # ordinary attention layers refuse it (vllm.model_executor.layers.attention)
    mla_only = True

    @staticmethod
    def check_usable(device: str) -> None:
        TritonAttentionBackend.check_usable(device, TritonMLABackend.name)

    @staticmethod
    def mla_decode(out: torch.Tensor, query: torch.Tensor, kv_cache: torch.Tensor,
                   block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float) -> None:
        from vllm.triton_ops.mla_decode_attention import mla_decode_attention
        mla_decode_attention(out, query, kv_cache, block_tables, seq_lens, scale)
