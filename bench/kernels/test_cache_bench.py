"""reshape_and_cache: our CPU kernel vs torch advanced-index assignment."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.attention.kv_cache_layout import kv_cache_shapes

SCALE = torch.tensor(1.0)


@pytest.mark.parametrize("impl", ["vllm", "torch"])
@pytest.mark.parametrize("tokens", [1, 64, 512])
def test_reshape_and_cache(benchmark, threads, tokens, impl):
    num_kv_heads, head_size, block_size, num_blocks = 3, 64, 16, 1024
    shapes = kv_cache_shapes(num_blocks, block_size, num_kv_heads, head_size)
    key_cache = torch.zeros(shapes.key, dtype=torch.bfloat16)
    value_cache = torch.zeros(shapes.value, dtype=torch.bfloat16)
    key = torch.randn(tokens, num_kv_heads, head_size, dtype=torch.bfloat16)
    value = torch.randn_like(key)
    slots = torch.randperm(num_blocks * block_size)[:tokens]
    if impl == "vllm":
        benchmark(ops.reshape_and_cache, key, value, key_cache, value_cache, slots, "auto",
                  SCALE, SCALE)
    else:
        blocks, offsets = slots // block_size, slots % block_size

        def native():
            key_cache[blocks, :, :, offsets] = key
            value_cache[blocks, :, offsets] = value
        benchmark(native)
