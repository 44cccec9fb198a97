"""reshape_and_cache, copy_blocks, swap_blocks on CPU, against plain indexing."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.attention.kv_cache_layout import kv_cache_shapes

from tests.kernels.reference import reshape_and_cache_ref

SCALE = torch.tensor(1.0)


def _caches(num_blocks, block_size, num_kv_heads, head_size, dtype):
    shapes = kv_cache_shapes(num_blocks, block_size, num_kv_heads, head_size)
    return torch.randn(shapes.key).to(dtype), torch.randn(shapes.value).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("head_size", [64, 80, 128, 256])
@pytest.mark.parametrize("num_tokens", [1, 37])
def test_reshape_and_cache(dtype, block_size, head_size, num_tokens):
    num_blocks, num_kv_heads = 8, 3
    key_cache, value_cache = _caches(num_blocks, block_size, num_kv_heads, head_size, dtype)
    key = torch.randn(num_tokens, num_kv_heads, head_size).to(dtype)
    value = torch.randn(num_tokens, num_kv_heads, head_size).to(dtype)
    slots = torch.randperm(num_blocks * block_size)[:num_tokens]
    slots[::5] = -1  # padding tokens are skipped
    expected_k, expected_v = reshape_and_cache_ref(key, value, key_cache, value_cache, slots)
    ops.reshape_and_cache(key, value, key_cache, value_cache, slots, "auto", SCALE, SCALE)
    assert torch.equal(key_cache, expected_k) and torch.equal(value_cache, expected_v)


def test_reshape_and_cache_from_fused_qkv_slices():
    key_cache, value_cache = _caches(4, 16, 2, 64, torch.float32)
    qkv = torch.randn(5, (4 + 2 + 2) * 64)
    key, value = qkv[:, 256:384], qkv[:, 384:]
    slots = torch.tensor([0, 17, 33, 48, 63])
    expected_k, expected_v = reshape_and_cache_ref(key, value, key_cache, value_cache, slots)
    ops.reshape_and_cache(key, value, key_cache, value_cache, slots, "auto", SCALE, SCALE)
    assert torch.equal(key_cache, expected_k) and torch.equal(value_cache, expected_v)


def test_reshape_and_cache_refuses_bad_input():
    key_cache, value_cache = _caches(2, 16, 2, 64, torch.float32)
    key = value = torch.randn(1, 2, 64)
    with pytest.raises(RuntimeError, match="beyond the cache"):
        ops.reshape_and_cache(key, value, key_cache, value_cache, torch.tensor([32]), "auto",
                              SCALE, SCALE)
    with pytest.raises(RuntimeError, match="kv_cache_dtype 'fp8'"):
        ops.reshape_and_cache(key, value, key_cache, value_cache, torch.tensor([0]), "fp8",
                              SCALE, SCALE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_copy_blocks(dtype):
    layers = [_caches(10, 16, 2, 64, dtype) for _ in range(3)]
    key_caches = [k for k, _ in layers]
    value_caches = [v for _, v in layers]
    mapping = torch.tensor([[0, 5], [1, 6], [9, 2]])
    expected = [c.clone() for c in key_caches + value_caches]
    for c in expected:
        for src, dst in mapping.tolist():
            c[dst] = c[src]
    ops.copy_blocks(key_caches, value_caches, mapping)
    for got, want in zip(key_caches + value_caches, expected):
        assert torch.equal(got, want)


def test_swap_blocks():
    src = torch.randn(kv_cache_shapes(6, 16, 2, 64).key)
    dst = torch.zeros(kv_cache_shapes(4, 16, 2, 64).key)
    mapping = torch.tensor([[5, 0], [2, 3]])
    ops.swap_blocks(src, dst, mapping)
    assert torch.equal(dst[0], src[5]) and torch.equal(dst[3], src[2])
    assert torch.all(dst[1:3] == 0)
    with pytest.raises(RuntimeError, match="out of range"):
        ops.swap_blocks(src, dst, torch.tensor([[0, 4]]))


def test_kv_cache_shapes_validate():
    shapes = kv_cache_shapes(10, 16, 3, 64)
    assert shapes.key == (10, 3, 64, 16) and shapes.value == (10, 3, 16, 64)
    with pytest.raises(ValueError, match="block_size"):
        kv_cache_shapes(10, 0, 3, 64)


def test_opcheck_cache_ops():
    key_cache, value_cache = _caches(4, 16, 2, 64, torch.bfloat16)
    key = torch.randn(3, 2, 64).to(torch.bfloat16)
    torch.library.opcheck(torch.ops._C.reshape_and_cache.default,
                          (key, key.clone(), key_cache, value_cache, torch.tensor([0, 5, -1]),
                           "auto", SCALE, SCALE))
    torch.library.opcheck(torch.ops._C.copy_blocks.default,
                          ([key_cache], [value_cache], torch.tensor([[0, 1]])))
    torch.library.opcheck(torch.ops._C.swap_blocks.default,
                          (key_cache, key_cache.clone(), torch.tensor([[0, 1]])))
