"""TRITON_ATTN: decode steps through the Triton paged-decode kernel
(vllm.triton_ops); everything else is the default backend's (cache writes,
layout, and paged_attention_prefill for steps with prefill tokens: there is
no Triton prefill kernel here).

Triton compiles for GPUs; on CPU it runs only under its interpreter
(TRITON_INTERPRET=1 before triton is first imported): correct and slow,
which is how the tests check it end to end."""
from __future__ import annotations

import torch

from vllm import envs
from vllm.attention.backends.metadata import AttentionMetadata
from vllm.attention.backends.paged import PagedAttentionBackend


class TritonAttentionBackend(PagedAttentionBackend):
    name = "TRITON_ATTN"

    @staticmethod
    def check_usable(device: str, name: str = "TRITON_ATTN") -> None:
        try:
            import triton  # noqa: F401
        except ImportError:
            raise ValueError(f"attention backend {name!r} needs the triton package "
                             "(pip install triton)") from None
        if device == "cpu" and not envs.TRITON_INTERPRET:
            raise ValueError(f"attention backend {name!r} runs on CPU only under Triton's "
                             "interpreter: set TRITON_INTERPRET=1 (slow; for checking)")

    @staticmethod
    def decode(out: torch.Tensor, query: torch.Tensor, key_cache: torch.Tensor,
               value_cache: torch.Tensor, md: AttentionMetadata, num_kv_heads: int,
               scale: float) -> None:
        from vllm.triton_ops.paged_decode_attention import paged_decode_attention
        paged_decode_attention(out, query, key_cache, value_cache, md.block_tables,
                               md.seq_lens, scale)
