"""Multi-head latent attention (DeepSeek-V2's MLA) over a paged latent cache.

Per token and layer the cache holds one latent: the normalised compressed KV
c (kv_lora_rank values) then the rotated shared key part k_pe (rope dims),
instead of per-head keys and values. With kv_b_proj's weight viewed per head
as W_UK [nope, lora] (keys) and W_UV [v, lora] (values):

    score(h, p) = q_nope_h . (W_UK_h c_p) + q_pe_h . k_pe_p
                = (W_UK_h^T q_nope_h) . c_p + q_pe_h . k_pe_p
    out_h       = sum_p softmax(score)_p W_UV_h c_p = W_UV_h (sum_p softmax_p c_p)

Absorbed (the default): the query is folded into latent space, attention
runs as one-KV-head attention over the cached latents (our
mla_decode_kvcache / mla_prefill_kvcache kernels), and W_UV is applied to
the result. Not absorbed (VLLM_MLA_PERFORM_MATRIX_ABSORPTION=0): each
step up-projects every visible latent to per-head keys and values and runs
ordinary attention on them, in PyTorch; the same numbers by the paper's own
equations, kept for comparison and debugging.

Absorbed costs per query head and cached position (lora + rope) + lora
multiply-adds against (nope + rope) + v for the up-projected form, but
needs no up-projection of the context: 16 heads x 158-token prompts of a
DeepSeek-V2-Lite shape spend ~1% of a prefill's FLOPs in absorbed
attention, so prefill runs absorbed too (bench/RESULTS.md, MLA).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from vllm import _custom_ops as ops
from vllm.attention.backends.torch_sdpa import causal_attention
from vllm.forward_context import get_attn_metadata

logger = logging.getLogger(__name__)

_UNIT_SCALE = torch.tensor(1.0)
# the CPU kernel's limits (csrc/cpu/kernel_table.h: kMlaDimMultiple, kMlaMaxLatentDim)
MLA_DIM_MULTIPLE = 16
MLA_MAX_LATENT_DIM = 1024


def check_mla_dims(kv_lora_rank: int, qk_rope_head_dim: int) -> None:
    """The head-dim combinations our MLA kernels take; a clear error at load
    for the others."""
    latent = kv_lora_rank + qk_rope_head_dim
    if kv_lora_rank % MLA_DIM_MULTIPLE or qk_rope_head_dim % MLA_DIM_MULTIPLE:
        raise ValueError(
            f"MLA needs kv_lora_rank ({kv_lora_rank}) and qk_rope_head_dim "
            f"({qk_rope_head_dim}) to be multiples of {MLA_DIM_MULTIPLE}; set "
            "VLLM_MLA_DISABLE=1 to run this model with a per-head KV cache instead")
    if latent > MLA_MAX_LATENT_DIM:
        raise ValueError(
            f"MLA's cached latent (kv_lora_rank + qk_rope_head_dim = {latent}) is above the "
            f"CPU kernel's {MLA_MAX_LATENT_DIM}; set VLLM_MLA_DISABLE=1 to run this model "
            "with a per-head KV cache instead")


class MLAAttention(nn.Module):
    """One layer's latent cache and attention. `kv_b_weight` is kv_b_proj's
    weight [heads * (nope + v), lora], read by process_weights_after_loading."""

    def __init__(self, num_heads: int, kv_lora_rank: int, qk_nope_head_dim: int,
                 qk_rope_head_dim: int, v_head_dim: int, scale: float, absorb: bool,
                 backend=None) -> None:
        """`backend`: PAGED_ATTENTION (None too: our kernels) or TRITON_MLA
        (decode through Triton)."""
        super().__init__()
        name = getattr(backend, "name", "PAGED_ATTENTION")
        if name not in ("PAGED_ATTENTION", "TRITON_MLA"):
            raise ValueError(f"attention backend {name!r} does not run MLA layers: choose "
                             "PAGED_ATTENTION (our MLA kernels) or TRITON_MLA, or set "
                             f"VLLM_MLA_DISABLE=1 to run {name} over a per-head KV cache")
        self.triton_decode = getattr(backend, "mla_decode", None)
        check_mla_dims(kv_lora_rank, qk_rope_head_dim)
        self.num_heads = num_heads
        self.kv_lora_rank, self.qk_rope_head_dim = kv_lora_rank, qk_rope_head_dim
        self.qk_nope_head_dim, self.v_head_dim = qk_nope_head_dim, v_head_dim
        self.scale = scale
        self.absorb = absorb
        # [heads, nope, lora] and [heads, lora, v]: the per-head up-projections
        # as batched matmuls take them (set once the weights are loaded)
        self.w_uk: torch.Tensor | None = None
        self.w_uv_t: torch.Tensor | None = None
        self.kv_b_weight: torch.Tensor | None = None
        # Bound by the worker once the cache is allocated: (latent_cache,)
        self.kv_cache: tuple[torch.Tensor] | None = None

    # ------------------------------------------------------------ the cache
    @property
    def latent_dim(self) -> int:
        return self.kv_lora_rank + self.qk_rope_head_dim

    def cache_shapes(self, num_blocks: int, block_size: int) -> list[tuple[int, ...]]:
        return [(num_blocks, block_size, self.latent_dim)]

    def cache_elements_per_token(self) -> int:
        return self.latent_dim

    def set_up_projection(self, kv_b_weight: torch.Tensor) -> None:
        heads, nope, v = self.num_heads, self.qk_nope_head_dim, self.v_head_dim
        per_head = kv_b_weight.view(heads, nope + v, self.kv_lora_rank)
        self.w_uk = per_head[:, :nope].contiguous()
        self.w_uv_t = per_head[:, nope:].transpose(1, 2).contiguous()
        self.kv_b_weight = kv_b_weight

    # ------------------------------------------------------------ compute
    def forward(self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor,
                k_pe: torch.Tensor, output_rows_only: bool = False) -> torch.Tensor:
        """q_nope [T, heads, nope], q_pe [T, heads, rope] (rotated); latent
        [T', lora] (normalised) and k_pe [T', rope] (rotated) of every new
        token, all of which go to the cache. Returns [T, heads * v]."""
        if self.kv_cache is None:
            raise RuntimeError("MLA layer has no latent cache bound")
        md = get_attn_metadata()
        if output_rows_only:
            md = md.for_output_rows()
        cache = self.kv_cache[0]
        ops.concat_and_cache_mla(latent, k_pe, cache, md.slot_mapping, "auto", _UNIT_SCALE)
        tokens = q_nope.shape[0]
        if not self.absorb:
            return self._expanded(q_nope, q_pe, cache, md).reshape(
                tokens, self.num_heads * self.v_head_dim)
        # W_UK folded into the query, head by head: [heads, T, nope] x [heads, nope, lora]
        q_latent = torch.bmm(q_nope.transpose(0, 1), self.w_uk)
        query = torch.cat([q_latent.transpose(0, 1), q_pe], dim=-1)
        out_latent = torch.empty(tokens, self.num_heads, self.kv_lora_rank, dtype=q_nope.dtype)
        if md.decode_only and self.triton_decode is not None:
            self.triton_decode(out_latent, query, cache, md.block_tables, md.seq_lens,
                               self.scale)
        elif md.decode_only:
            ops.mla_decode_kvcache(out_latent, query, cache, self.scale, md.block_tables,
                                   md.seq_lens)
        else:
            ops.mla_prefill_kvcache(out_latent, query, cache, self.scale, md.block_tables,
                                    md.query_start_loc, md.seq_lens)
        # W_UV after attention: [heads, T, lora] x [heads, lora, v]
        out = torch.bmm(out_latent.transpose(0, 1), self.w_uv_t)
        return out.transpose(0, 1).reshape(tokens, self.num_heads * self.v_head_dim)

    def _expanded(self, q_nope: torch.Tensor, q_pe: torch.Tensor, cache: torch.Tensor,
                  md) -> torch.Tensor:
        """Not absorbed: every visible latent up-projected to per-head keys
        and values, then plain causal attention (PyTorch)."""
        heads, nope, lora = self.num_heads, self.qk_nope_head_dim, self.kv_lora_rank
        out = torch.empty(q_nope.shape[0], heads, self.v_head_dim, dtype=q_nope.dtype)
        query = torch.cat([q_nope, q_pe], dim=-1)
        block_size = cache.shape[1]
        starts = md.query_start_loc.tolist()
        for i, seq_len in enumerate(md.seq_lens.tolist()):
            q = query[starts[i]:starts[i + 1]]
            q_len = q.shape[0]
            if q_len == 0:
                continue
            table = md.block_tables[i, :(seq_len + block_size - 1) // block_size].long()
            latents = cache[table].reshape(-1, self.latent_dim)[:seq_len]
            kv = F.linear(latents[:, :lora], self.kv_b_weight).view(
                seq_len, heads, nope + self.v_head_dim)
            k_pe = latents[:, lora:].unsqueeze(1).expand(seq_len, heads, self.qk_rope_head_dim)
            keys = torch.cat([kv[..., :nope], k_pe], dim=-1)
            out[starts[i]:starts[i + 1]] = causal_attention(q, keys, kv[..., nope:], self.scale)
        return out
