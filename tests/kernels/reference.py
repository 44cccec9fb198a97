"""Pure-PyTorch references the kernels are checked against (vLLM's numerics:
fp32 statistics, normalised value rounded to the input dtype before the
weight multiply)."""
from __future__ import annotations

import torch


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight


def fused_add_rms_norm_ref(x: torch.Tensor, residual: torch.Tensor,
                           weight: torch.Tensor, eps: float):
    summed = x.float() + residual.float()
    new_residual = summed.to(x.dtype)
    normed = summed * torch.rsqrt(summed.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight, new_residual


# ---- activations: exact math in float64, then the reference's roundings
def _gelu_erf(x):
    # 0.5 x erfc(-x / sqrt 2): no cancellation for negative x
    return 0.5 * x * torch.special.erfc(-x / 2 ** 0.5)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))


ACTIVATIONS = {
    "silu": lambda x: x * torch.sigmoid(x),
    "gelu": _gelu_erf,
    "gelu_tanh": _gelu_tanh,
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_quick": lambda x: x * torch.sigmoid(1.702 * x),
}


def act_and_mul_ref(kind: str, x: torch.Tensor) -> torch.Tensor:
    """act(x[..., :d]) rounded to x's dtype, times x[..., d:] (vLLM's reference)."""
    d = x.shape[-1] // 2
    gate = ACTIVATIONS[kind](x[..., :d].double()).to(x.dtype)
    return (gate.double() * x[..., d:].double()).to(x.dtype)


def activation_ref(kind: str, x: torch.Tensor) -> torch.Tensor:
    return ACTIVATIONS[kind](x.double()).to(x.dtype)


# ---- rotary embedding
def rotary_ref(positions, query, key, head_size, cos_sin_cache, is_neox):
    """Returns rotated copies of query and key (fp32 math, one rounding)."""
    rot_dim = cos_sin_cache.shape[1]
    cos, sin = cos_sin_cache.float()[positions.flatten()].chunk(2, dim=-1)

    def rotate(x):
        shape = x.shape
        x = x.float().reshape(positions.numel(), -1, head_size)
        rot, rest = x[..., :rot_dim], x[..., rot_dim:]
        c, s = cos[:, None, :], sin[:, None, :]
        if is_neox:
            x1, x2 = rot.chunk(2, dim=-1)
            rot = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
        else:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
            rot = torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).flatten(-2)
        return torch.cat([rot, rest], dim=-1).reshape(shape)

    out_q = rotate(query).to(query.dtype)
    out_k = None if key is None else rotate(key).to(key.dtype)
    return out_q, out_k


def cos_sin_cache_ref(max_position: int, rot_dim: int, base: float, dtype):
    inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim))
    freqs = torch.outer(torch.arange(max_position, dtype=torch.float64), inv_freq)
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(dtype)


# ---- KV cache: key [num_blocks, num_kv_heads, head_size, block_size],
#      value [num_blocks, num_kv_heads, block_size, head_size]
def reshape_and_cache_ref(key, value, key_cache, value_cache, slot_mapping):
    kc, vc = key_cache.clone(), value_cache.clone()
    num_kv_heads, head_size, block_size = kc.shape[1:]
    k = key.reshape(-1, num_kv_heads, head_size)
    v = value.reshape(-1, num_kv_heads, head_size)
    for t, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        kc[slot // block_size, :, :, slot % block_size] = k[t]
        vc[slot // block_size, :, slot % block_size] = v[t]
    return kc, vc


# ---- attention over the paged cache
def gather_keys(key_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int):
    """[seq_len, num_kv_heads, head_size] keys of one sequence."""
    blocks = key_cache[block_table.long()]  # [max_blocks, kv_heads, head, block_size]
    rows = blocks.permute(0, 3, 1, 2).reshape(-1, key_cache.shape[1], key_cache.shape[2])
    return rows[:seq_len]


def gather_values(value_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int):
    """[seq_len, num_kv_heads, head_size] values of one sequence."""
    blocks = value_cache[block_table.long()]  # [max_blocks, kv_heads, block_size, head]
    rows = blocks.permute(0, 2, 1, 3).reshape(-1, value_cache.shape[1], value_cache.shape[3])
    return rows[:seq_len]


def paged_attention_ref(query, key_cache, value_cache, block_tables, seq_lens, scale,
                        alibi_slopes=None, query_start_loc=None):
    """Float64 attention; query rows of sequence i are its last positions."""
    num_heads, num_kv_heads = query.shape[1], key_cache.shape[1]
    group = num_heads // num_kv_heads
    out = torch.empty_like(query)
    starts = (list(range(len(seq_lens) + 1)) if query_start_loc is None
              else query_start_loc.tolist())
    for i, seq_len in enumerate(seq_lens.tolist()):
        q = query[starts[i]:starts[i + 1]].double()  # [q_len, H, D]
        q_len = q.shape[0]
        if q_len == 0:
            continue
        k = gather_keys(key_cache, block_tables[i], seq_len).double().repeat_interleave(group, 1)
        v = gather_values(value_cache, block_tables[i], seq_len).double().repeat_interleave(group, 1)
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale
        positions = torch.arange(seq_len, dtype=torch.float64)
        if alibi_slopes is not None:
            scores = scores + alibi_slopes.double()[:, None, None] * (positions - seq_len + 1)
        query_pos = torch.arange(seq_len - q_len, seq_len)
        mask = positions[None, :] > query_pos[:, None]
        scores = scores.masked_fill(mask[None], float("-inf"))
        out[starts[i]:starts[i + 1]] = torch.einsum(
            "hqk,khd->qhd", scores.softmax(-1), v).to(query.dtype)
    return out
