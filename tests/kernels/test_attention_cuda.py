"""Paged attention (v1, v2, prefill) on the GPU against the float64
reference. Skipped cleanly without a GPU or without a GPU build."""
from __future__ import annotations

import math

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.attention.kv_cache_layout import kv_cache_shapes

from tests.kernels.gpu import GPU_TESTS
from tests.kernels.reference import paged_attention_ref

pytestmark = GPU_TESTS
ONE = torch.tensor(1.0)
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
       torch.float16: dict(rtol=2e-3, atol=2e-3)}


def _case(num_heads, num_kv_heads, head_size, block_size, lens, dtype):
    lens = torch.tensor(lens, dtype=torch.int32)
    max_blocks = math.ceil(int(lens.max()) / block_size)
    num_blocks = len(lens) * max_blocks + 3
    shapes = kv_cache_shapes(num_blocks, block_size, num_kv_heads, head_size, "cuda")
    kc, vc = torch.randn(shapes.key).to(dtype), torch.randn(shapes.value).to(dtype)
    tables = torch.randperm(num_blocks)[: len(lens) * max_blocks].reshape(len(lens), -1)
    return kc, vc, tables.to(torch.int32), lens


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_size", [64, 80, 128, 256])
@pytest.mark.parametrize("block_size", [16, 32])
def test_decode_cuda(version, dtype, head_size, block_size):
    kc, vc, tables, lens = _case(9, 3, head_size, block_size, [1, 17, 600, 1100], dtype)
    query = torch.randn(len(lens), 9, head_size).to(dtype)
    scale = head_size ** -0.5
    expected = paged_attention_ref(query, kc, vc, tables, lens, scale)
    q, k, v, t, n = (x.cuda() for x in (query, kc, vc, tables, lens))
    out = torch.full_like(q, float("nan"))
    if version == "v1":
        ops.paged_attention_v1(out, q, k, v, 3, scale, t, n, block_size, 1100, None, "auto",
                               ONE, ONE)
    else:
        parts = math.ceil(1100 / ops.PARTITION_SIZE)
        exp_sums = torch.empty(len(lens), 9, parts, device="cuda")
        tmp = torch.empty(len(lens), 9, parts, head_size, dtype=dtype, device="cuda")
        ops.paged_attention_v2(out, exp_sums, torch.empty_like(exp_sums), tmp, q, k, v, 3, scale,
                               t, n, block_size, 1100, None, "auto", ONE, ONE)
    torch.testing.assert_close(out.cpu(), expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_cuda(dtype):
    plan = [(0, 37), (48, 20), (99, 1), (5, 70)]
    kc, vc, tables, lens = _case(8, 2, 128, 16, [c + n for c, n in plan], dtype)
    starts = torch.tensor([0] + list(torch.tensor([n for _, n in plan]).cumsum(0)),
                          dtype=torch.int32)
    query = torch.randn(int(starts[-1]), 8, 128).to(dtype)
    expected = paged_attention_ref(query, kc, vc, tables, lens, 0.088, query_start_loc=starts)
    q, k, v, t, n, st = (x.cuda() for x in (query, kc, vc, tables, lens, starts))
    out = torch.full_like(q, float("nan"))
    ops.paged_attention_prefill(out, q, k, v, 2, 0.088, t, st, n, None, "auto", ONE, ONE)
    torch.testing.assert_close(out.cpu(), expected, **TOL[dtype])
