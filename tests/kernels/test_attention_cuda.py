"""Paged attention (v1, v2, prefill) on the GPU against the float64
reference. Skipped cleanly without a GPU or without a GPU build."""
from __future__ import annotations

import math

import pytest
import torch

from vllm import _custom_ops as ops

from tests.kernels.gpu import GPU_TESTS, paged_cache_case
from tests.kernels.reference import paged_attention_ref

pytestmark = GPU_TESTS
ONE = torch.tensor(1.0)
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
       torch.float16: dict(rtol=2e-3, atol=2e-3)}


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_size", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("block_size", [16, 32])
def test_decode_cuda(version, dtype, head_size, block_size):
    kc, vc, tables, lens = paged_cache_case(3, head_size, block_size, [1, 17, 600, 1100], dtype)
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
    kc, vc, tables, lens = paged_cache_case(2, 128, 16, [c + n for c, n in plan], dtype)
    starts = torch.tensor([0] + list(torch.tensor([n for _, n in plan]).cumsum(0)),
                          dtype=torch.int32)
    query = torch.randn(int(starts[-1]), 8, 128).to(dtype)
    expected = paged_attention_ref(query, kc, vc, tables, lens, 0.088, query_start_loc=starts)
    q, k, v, t, n, st = (x.cuda() for x in (query, kc, vc, tables, lens, starts))
    out = torch.full_like(q, float("nan"))
    ops.paged_attention_prefill(out, q, k, v, 2, 0.088, t, st, n, None, "auto", ONE, ONE)
    torch.testing.assert_close(out.cpu(), expected, **TOL[dtype])


def _decode(version, out, q, k, v, num_kv_heads, scale, t, n, block_size, max_len, slopes):
    if version == "v1":
        ops.paged_attention_v1(out, q, k, v, num_kv_heads, scale, t, n, block_size, max_len,
                               slopes, "auto", ONE, ONE)
        return
    num_seqs, num_heads, head_size = q.shape
    parts = math.ceil(max_len / ops.PARTITION_SIZE)
    exp_sums = torch.empty(num_seqs, num_heads, parts, device="cuda")
    tmp = torch.empty(num_seqs, num_heads, parts, head_size, dtype=q.dtype, device="cuda")
    ops.paged_attention_v2(out, exp_sums, torch.empty_like(exp_sums), tmp, q, k, v, num_kv_heads,
                           scale, t, n, block_size, max_len, slopes, "auto", ONE, ONE)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("heads", [(8, 1), (8, 8)], ids=["mqa", "mha"])
def test_decode_cuda_alibi(version, heads):
    num_heads, num_kv_heads = heads
    kc, vc, tables, lens = paged_cache_case(num_kv_heads, 64, 16, [3, 513, 700], torch.float32)
    query = torch.randn(len(lens), num_heads, 64)
    slopes = torch.tensor([2 ** (-8 * (h + 1) / num_heads) for h in range(num_heads)])
    expected = paged_attention_ref(query, kc, vc, tables, lens, 0.125, slopes)
    q, k, v, t, n, sl = (x.cuda() for x in (query, kc, vc, tables, lens, slopes))
    out = torch.full_like(q, float("nan"))
    _decode(version, out, q, k, v, num_kv_heads, 0.125, t, n, 16, 700, sl)
    torch.testing.assert_close(out.cpu(), expected, **TOL[torch.float32])


def test_decode_cuda_odd_tail_many_sequences():
    """Many sequences whose lengths end mid-block and mid-partition, bf16."""
    lens = [int(x) for x in torch.randint(1, 1500, (33,))]
    kc, vc, tables, n = paged_cache_case(4, 128, 32, lens, torch.bfloat16)
    query = torch.randn(len(lens), 12, 128).to(torch.bfloat16)
    expected = paged_attention_ref(query, kc, vc, tables, n, 0.088)
    for version in ("v1", "v2"):
        q, k, v, t, nn = (x.cuda() for x in (query, kc, vc, tables, n))
        out = torch.full_like(q, float("nan"))
        _decode(version, out, q, k, v, 4, 0.088, t, nn, 32, max(lens), None)
        torch.testing.assert_close(out.cpu(), expected, **TOL[torch.bfloat16])


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("heads", [(6, 6), (10, 5), (12, 4), (16, 2), (32, 2), (40, 4)],
                         ids=["g1", "g2", "g3", "g8", "g16", "g10"])
def test_decode_cuda_head_groups(version, heads):
    """Query heads per KV head from 1 to 16: tiles of 1, 2, 4 and 8 heads,
    partly filled last tiles, several tiles per KV head."""
    num_heads, num_kv_heads = heads
    lens = [1, 17, 600, 1100]
    kc, vc, tables, n = paged_cache_case(num_kv_heads, 128, 16, lens, torch.bfloat16)
    query = torch.randn(len(lens), num_heads, 128).to(torch.bfloat16)
    expected = paged_attention_ref(query, kc, vc, tables, n, 0.088)
    q, k, v, t, nn = (x.cuda() for x in (query, kc, vc, tables, n))
    out = torch.full_like(q, float("nan"))
    _decode(version, out, q, k, v, num_kv_heads, 0.088, t, nn, 16, 1100, None)
    torch.testing.assert_close(out.cpu(), expected, **TOL[torch.bfloat16])


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("layout", ["block_size_12", "head_size_36", "unaligned_cache"])
def test_decode_cuda_element_path(version, layout):
    """Shapes the vector kernel does not take, served by the element kernel."""
    block_size, head_size = {"block_size_12": (12, 64), "head_size_36": (16, 36),
                             "unaligned_cache": (16, 64)}[layout]
    lens = [3, 250, 700]
    kc, vc, tables, n = paged_cache_case(2, head_size, block_size, lens, torch.float16)
    query = torch.randn(len(lens), 8, head_size).to(torch.float16)
    expected = paged_attention_ref(query, kc, vc, tables, n, 0.1)
    k, v = kc.cuda(), vc.cuda()
    if layout == "unaligned_cache":  # same values, one element off 16-byte alignment
        k = torch.empty(k.numel() + 1, dtype=k.dtype, device="cuda")[1:].view(k.shape).copy_(k)
        v = torch.empty(v.numel() + 1, dtype=v.dtype, device="cuda")[1:].view(v.shape).copy_(v)
    q, t, nn = query.cuda(), tables.cuda(), n.cuda()
    out = torch.full_like(q, float("nan"))
    _decode(version, out, q, k, v, 2, 0.1, t, nn, block_size, 700, None)
    torch.testing.assert_close(out.cpu(), expected, **TOL[torch.float16])


@pytest.mark.parametrize("heads", [(8, 8), (32, 4)], ids=["mha", "g8"])
def test_prefill_cuda_alibi_and_groups(heads):
    num_heads, num_kv_heads = heads
    plan = [(0, 130), (600, 9), (31, 1)]
    kc, vc, tables, lens = paged_cache_case(num_kv_heads, 64, 32, [c + n for c, n in plan],
                                 torch.bfloat16)
    starts = torch.tensor([0] + list(torch.tensor([n for _, n in plan]).cumsum(0)),
                          dtype=torch.int32)
    query = torch.randn(int(starts[-1]), num_heads, 64).to(torch.bfloat16)
    slopes = torch.tensor([2 ** (-8 * (h + 1) / num_heads) for h in range(num_heads)])
    expected = paged_attention_ref(query, kc, vc, tables, lens, 0.125, slopes,
                                   query_start_loc=starts)
    q, k, v, t, n, st, sl = (x.cuda() for x in (query, kc, vc, tables, lens, starts, slopes))
    out = torch.full_like(q, float("nan"))
    ops.paged_attention_prefill(out, q, k, v, num_kv_heads, 0.125, t, st, n, sl, "auto", ONE, ONE)
    torch.testing.assert_close(out.cpu(), expected, **TOL[torch.bfloat16])


def test_opcheck_paged_attention_cuda():
    kc, vc, tables, lens = paged_cache_case(2, 64, 16, [5, 40], torch.bfloat16)
    k, v, t, n = (x.cuda() for x in (kc, vc, tables, lens))
    q = torch.randn(2, 4, 64, dtype=torch.bfloat16, device="cuda")
    one = ONE.cuda()
    torch.library.opcheck(torch.ops._C.paged_attention_v1.default,
                          (torch.empty_like(q), q, k, v, 2, 0.125, t, n, 16, 40, None, "auto",
                           one, one, 0, 0, 0, 0, 0))
    exp_sums = torch.empty(2, 4, 1, device="cuda")
    tmp_out = torch.empty(2, 4, 1, 64, dtype=torch.bfloat16, device="cuda")
    torch.library.opcheck(torch.ops._C.paged_attention_v2.default,
                          (torch.empty_like(q), exp_sums, torch.empty_like(exp_sums), tmp_out,
                           q, k, v, 2, 0.125, t, n, 16, 40, None, "auto", one, one,
                           0, 0, 0, 0, 0))
    starts = torch.tensor([0, 2, 4], dtype=torch.int32, device="cuda")
    q2 = torch.randn(4, 4, 64, dtype=torch.bfloat16, device="cuda")
    torch.library.opcheck(torch.ops._C.paged_attention_prefill.default,
                          (torch.empty_like(q2), q2, k, v, 2, 0.125, t, starts, n, None, "auto",
                           one, one))
