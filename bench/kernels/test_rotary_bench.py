"""Rotary embedding (NeoX): our CPU kernel vs vLLM's torch-native forward."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops


def torch_native(positions, query, key, head_size, cache):
    # vLLM RotaryEmbedding.forward_native for rot_dim == head_size, NeoX
    cos, sin = cache[positions].chunk(2, dim=-1)
    for x in (query, key):
        shaped = x.view(positions.numel(), -1, head_size)
        x1, x2 = shaped.chunk(2, dim=-1)
        c, s = cos.unsqueeze(-2), sin.unsqueeze(-2)
        shaped.copy_(torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1))


@pytest.mark.parametrize("impl", ["vllm", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("tokens", [1, 64, 512])
def test_rotary(benchmark, threads, tokens, dtype, impl):
    head_size, num_heads, num_kv_heads = 64, 9, 3  # SmolLM2-135M
    cache = torch.randn(8192, head_size, dtype=dtype)
    positions = torch.randint(0, 8192, (tokens,))
    query = torch.randn(tokens, num_heads * head_size, dtype=dtype)
    key = torch.randn(tokens, num_kv_heads * head_size, dtype=dtype)
    if impl == "vllm":
        benchmark(ops.rotary_embedding, positions, query, key, head_size, cache, True)
    else:
        benchmark(torch_native, positions, query, key, head_size, cache)
