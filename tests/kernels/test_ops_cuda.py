"""Activation, rotary and KV-cache ops on the GPU against the same references
as the CPU tests. Skipped cleanly without a GPU or without a GPU build."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.attention.kv_cache_layout import kv_cache_shapes

from tests.kernels.gpu import GPU_TESTS
from tests.kernels.reference import (act_and_mul_ref, activation_ref, cos_sin_cache_ref,
                                     reshape_and_cache_ref, rotary_ref)

pytestmark = GPU_TESTS

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
       torch.float16: dict(rtol=2e-3, atol=1e-3)}
GATED = {"silu": ops.silu_and_mul, "gelu": ops.gelu_and_mul, "gelu_tanh": ops.gelu_tanh_and_mul}
PLAIN = {"gelu_new": ops.gelu_new, "gelu_fast": ops.gelu_fast, "gelu_quick": ops.gelu_quick}


@pytest.mark.parametrize("kind", sorted(GATED))
@pytest.mark.parametrize("dtype", DTYPES)
def test_act_and_mul_cuda(kind, dtype):
    x = torch.randn(37, 2 * 2816, dtype=dtype, device="cuda") * 4
    out = torch.full((37, 2816), float("nan"), dtype=dtype, device="cuda")
    GATED[kind](out, x)
    torch.testing.assert_close(out.cpu(), act_and_mul_ref(kind, x.cpu()), **TOL[dtype])


@pytest.mark.parametrize("kind", sorted(PLAIN))
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_cuda(kind, dtype):
    x = torch.randn(9, 1000, dtype=dtype, device="cuda") * 4
    out = torch.full_like(x, float("nan"))
    PLAIN[kind](out, x)
    torch.testing.assert_close(out.cpu(), activation_ref(kind, x.cpu()), **TOL[dtype])


@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_size,rot_dim", [(64, 64), (128, 64), (256, 256)])
def test_rotary_cuda(is_neox, dtype, head_size, rot_dim):
    cache = cos_sin_cache_ref(4096, rot_dim, 10000.0, dtype)
    positions = torch.randint(0, 4096, (13,))
    query = torch.randn(13, 9 * head_size, dtype=dtype)
    key = torch.randn(13, 3 * head_size, dtype=dtype)
    expected_q, expected_k = rotary_ref(positions, query, key, head_size, cache, is_neox)
    q, k = query.cuda(), key.cuda()
    ops.rotary_embedding(positions.cuda(), q, k, head_size, cache.cuda(), is_neox)
    torch.testing.assert_close(q.cpu(), expected_q, **TOL[dtype])
    torch.testing.assert_close(k.cpu(), expected_k, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [16, 32])
def test_reshape_and_cache_cuda(dtype, block_size):
    shapes = kv_cache_shapes(8, block_size, 3, 128, "cuda")
    key_cache, value_cache = torch.randn(shapes.key).to(dtype), torch.randn(shapes.value).to(dtype)
    key = torch.randn(37, 3, 128).to(dtype)
    value = torch.randn(37, 3, 128).to(dtype)
    slots = torch.randperm(8 * block_size)[:37]
    slots[::5] = -1
    expected_k, expected_v = reshape_and_cache_ref(key, value, key_cache, value_cache, slots)
    kc, vc = key_cache.cuda(), value_cache.cuda()
    scale = torch.tensor(1.0, device="cuda")
    ops.reshape_and_cache(key.cuda(), value.cuda(), kc, vc, slots.cuda(), "auto", scale, scale)
    assert torch.equal(kc.cpu(), expected_k) and torch.equal(vc.cpu(), expected_v)


def test_copy_and_swap_blocks_cuda():
    shapes = kv_cache_shapes(10, 16, 2, 64)
    caches = [torch.randn(shapes.key if i < 2 else shapes.value, device="cuda") for i in range(4)]
    expected = [c.clone() for c in caches]
    mapping = torch.tensor([[0, 5], [9, 2]])
    for c in expected:
        for src, dst in mapping.tolist():
            c[dst] = c[src]
    ops.copy_blocks(caches[:2], caches[2:], mapping)
    for got, want in zip(caches, expected):
        assert torch.equal(got, want)
    host = torch.zeros(kv_cache_shapes(4, 16, 2, 64).key)
    ops.swap_blocks(caches[0], host, torch.tensor([[5, 1]]))
    torch.cuda.synchronize()
    assert torch.equal(host[1], caches[0][5].cpu())


@pytest.mark.parametrize("name", sorted(GATED) + sorted(PLAIN))
def test_opcheck_activation_cuda(name):
    fn = getattr(torch.ops._C, f"{name}_and_mul" if name in GATED else name).default
    x = torch.randn(4, 64, dtype=torch.bfloat16, device="cuda")
    out = torch.empty(4, 32 if name in GATED else 64, dtype=torch.bfloat16, device="cuda")
    torch.library.opcheck(fn, (out, x))


def test_opcheck_rotary_and_cache_cuda():
    cache = cos_sin_cache_ref(32, 64, 10000.0, torch.bfloat16).cuda()
    args = (torch.randint(0, 32, (3,), device="cuda"),
            torch.randn(3, 128, dtype=torch.bfloat16, device="cuda"),
            torch.randn(3, 64, dtype=torch.bfloat16, device="cuda"), 64, cache, True)
    torch.library.opcheck(torch.ops._C.rotary_embedding.default, args)
    shapes = kv_cache_shapes(4, 16, 2, 64, "cuda")
    key_cache = torch.randn(shapes.key, dtype=torch.bfloat16, device="cuda")
    value_cache = torch.randn(shapes.value, dtype=torch.bfloat16, device="cuda")
    key = torch.randn(3, 2, 64, dtype=torch.bfloat16, device="cuda")
    scale = torch.tensor(1.0, device="cuda")
    torch.library.opcheck(torch.ops._C.reshape_and_cache.default,
                          (key, key.clone(), key_cache, value_cache,
                           torch.tensor([0, 5, -1], device="cuda"), "auto", scale, scale))
    torch.library.opcheck(torch.ops._C.copy_blocks.default,
                          ([key_cache], [value_cache], torch.tensor([[0, 1]])))


@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape_and_cache_cuda_odd_head(dtype):
    """Head size 80 and a single token written into the middle of a block."""
    shapes = kv_cache_shapes(3, 16, 2, 80, "cuda")
    key_cache, value_cache = torch.randn(shapes.key).to(dtype), torch.randn(shapes.value).to(dtype)
    key, value = torch.randn(1, 2, 80).to(dtype), torch.randn(1, 2, 80).to(dtype)
    slots = torch.tensor([33])
    expected_k, expected_v = reshape_and_cache_ref(key, value, key_cache, value_cache, slots)
    kc, vc = key_cache.cuda(), value_cache.cuda()
    scale = torch.tensor(1.0, device="cuda")
    ops.reshape_and_cache(key.cuda(), value.cuda(), kc, vc, slots.cuda(), "auto", scale, scale)
    assert torch.equal(kc.cpu(), expected_k) and torch.equal(vc.cpu(), expected_v)


@pytest.mark.parametrize("kind", sorted(GATED))
@pytest.mark.parametrize("dtype", DTYPES)
def test_act_and_mul_cuda_element_path(kind, dtype):
    """Widths and views the 16-byte path cannot take: odd width, and rows
    starting one element off alignment."""
    x = torch.randn(5, 2 * 1001, dtype=dtype, device="cuda") * 4
    out = torch.full((5, 1001), float("nan"), dtype=dtype, device="cuda")
    GATED[kind](out, x)
    torch.testing.assert_close(out.cpu(), act_and_mul_ref(kind, x.cpu()), **TOL[dtype])
    base = torch.randn(5, 2 * 64 + 1, dtype=dtype, device="cuda") * 4
    shifted = base[:, 1:]
    out = torch.full((5, 64), float("nan"), dtype=dtype, device="cuda")
    GATED[kind](out, shifted)
    torch.testing.assert_close(out.cpu(), act_and_mul_ref(kind, shifted.cpu()), **TOL[dtype])
