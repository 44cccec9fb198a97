"""Paged attention on CPU (v1, v2, prefill / chunked prefill) against a
float64 reference that gathers K/V from the block tables, per ISA."""
from __future__ import annotations

import math

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.attention.kv_cache_layout import kv_cache_shapes

from tests.kernels.isa import cpu_isa  # noqa: F401  (fixture)
from tests.kernels.reference import paged_attention_ref, reshape_and_cache_ref

SCALE_1 = torch.tensor(1.0)
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
       torch.float16: dict(rtol=2e-3, atol=2e-3)}


def make_cache(num_blocks, block_size, num_kv_heads, head_size, dtype):
    shapes = kv_cache_shapes(num_blocks, block_size, num_kv_heads, head_size)
    return torch.randn(shapes.key).to(dtype), torch.randn(shapes.value).to(dtype)


def make_tables(seq_lens, block_size, num_blocks):
    max_blocks = max(1, max(math.ceil(n / block_size) for n in seq_lens))
    # Random, distinct physical blocks: order in the cache must not matter.
    perm = torch.randperm(num_blocks)[: len(seq_lens) * max_blocks]
    return perm.reshape(len(seq_lens), max_blocks).to(torch.int32)


def alibi(num_heads):
    return torch.tensor([2 ** (-8 * (h + 1) / num_heads) for h in range(num_heads)])


def run_v1(query, kc, vc, tables, lens, scale, slopes=None):
    out = torch.full_like(query, float("nan"))
    ops.paged_attention_v1(out, query, kc, vc, kc.shape[1], scale, tables, lens, kc.shape[3],
                           int(lens.max()), slopes, "auto", SCALE_1, SCALE_1)
    return out


def run_v2(query, kc, vc, tables, lens, scale, slopes=None):
    num_seqs, num_heads, head_size = query.shape
    parts = math.ceil(int(lens.max()) / ops.PARTITION_SIZE)
    exp_sums = torch.full((num_seqs, num_heads, parts), float("nan"))
    max_logits = torch.full_like(exp_sums, float("nan"))
    tmp_out = torch.full((num_seqs, num_heads, parts, head_size), float("nan"), dtype=query.dtype)
    out = torch.full_like(query, float("nan"))
    ops.paged_attention_v2(out, exp_sums, max_logits, tmp_out, query, kc, vc, kc.shape[1],
                           scale, tables, lens, kc.shape[3], int(lens.max()), slopes, "auto",
                           SCALE_1, SCALE_1)
    return out


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_size", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("heads", [(9, 3), (8, 8), (8, 1)], ids=["gqa", "mha", "mqa"])
def test_decode(cpu_isa, version, dtype, head_size, block_size, heads):
    num_heads, num_kv_heads = heads
    lens = torch.tensor([1, 17, 300, 1100], dtype=torch.int32)  # v2: 1100 -> 3 partitions
    num_blocks = 4 * math.ceil(1100 / block_size) + 3
    kc, vc = make_cache(num_blocks, block_size, num_kv_heads, head_size, dtype)
    tables = make_tables(lens.tolist(), block_size, num_blocks)
    query = torch.randn(len(lens), num_heads, head_size).to(dtype)
    scale = head_size ** -0.5
    run = run_v1 if version == "v1" else run_v2
    out = run(query, kc, vc, tables, lens, scale)
    torch.testing.assert_close(out, paged_attention_ref(query, kc, vc, tables, lens, scale),
                               **TOL[dtype])


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_size", [8, 64, 128])
def test_decode_other_block_sizes(cpu_isa, version, dtype, block_size):
    # 8: spans end inside a 16-lane vector (the softmax's tail path); 128: a
    # block as wide as a span
    lens = torch.tensor([1, 9, 200, 700], dtype=torch.int32)
    num_blocks = 4 * math.ceil(700 / block_size) + 3
    kc, vc = make_cache(num_blocks, block_size, 3, 64, dtype)
    tables = make_tables(lens.tolist(), block_size, num_blocks)
    query = torch.randn(len(lens), 9, 64).to(dtype)
    run = run_v1 if version == "v1" else run_v2
    out = run(query, kc, vc, tables, lens, 0.125)
    torch.testing.assert_close(out, paged_attention_ref(query, kc, vc, tables, lens, 0.125),
                               **TOL[dtype])


def poison_stale_slots(kc, vc, tables, lens):
    """NaN in every cache slot no sequence has written: the blocks no table
    uses and each sequence's last block past its length (stale data of an
    earlier sequence, which the kernels must not read: 0 x NaN is NaN)."""
    used = torch.zeros(kc.shape[0], dtype=torch.bool)
    used[tables.flatten().long()] = True
    kc[~used] = float("nan")
    vc[~used] = float("nan")
    block_size = kc.shape[3]
    for seq, n in enumerate(lens.tolist()):
        blocks = math.ceil(n / block_size)
        for pos in range(n, blocks * block_size):
            block = int(tables[seq, pos // block_size])
            kc[block, :, :, pos % block_size] = float("nan")
            vc[block, :, pos % block_size, :] = float("nan")


@pytest.mark.parametrize("version", ["v1", "v2", "prefill"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size", [16, 32])
def test_stale_cache_slots_are_never_read(cpu_isa, version, dtype, block_size):
    # lengths ending mid-block, mid-vector and on a block edge; a prefill
    # whose last query tile ends inside a block
    lens = torch.tensor([3, 40, 129, 300], dtype=torch.int32)
    num_blocks = 4 * math.ceil(300 / block_size) + 5
    kc, vc = make_cache(num_blocks, block_size, 3, 64, dtype)
    tables = make_tables(lens.tolist(), block_size, num_blocks)
    poison_stale_slots(kc, vc, tables, lens)
    if version == "prefill":
        new = torch.tensor([3, 40, 29, 61])  # tokens of each sequence in this step
        starts = torch.cat([torch.zeros(1, dtype=torch.int32), new.cumsum(0).to(torch.int32)])
        query = torch.randn(int(starts[-1]), 9, 64).to(dtype)
        out = torch.full_like(query, float("nan"))
        ops.paged_attention_prefill(out, query, kc, vc, 3, 0.125, tables, starts, lens, None,
                                    "auto", SCALE_1, SCALE_1)
        expected = paged_attention_ref(query, kc, vc, tables, lens, 0.125, query_start_loc=starts)
    else:
        query = torch.randn(len(lens), 9, 64).to(dtype)
        out = (run_v1 if version == "v1" else run_v2)(query, kc, vc, tables, lens, 0.125)
        expected = paged_attention_ref(query, kc, vc, tables, lens, 0.125)
    assert not expected.isnan().any()  # the reference reads only written slots
    torch.testing.assert_close(out, expected, **TOL[dtype])


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_decode_alibi(cpu_isa, version):
    lens = torch.tensor([5, 700], dtype=torch.int32)
    kc, vc = make_cache(96, 16, 2, 64, torch.float32)
    tables = make_tables(lens.tolist(), 16, 96)
    query = torch.randn(2, 8, 64)
    slopes = alibi(8)
    run = run_v1 if version == "v1" else run_v2
    out = run(query, kc, vc, tables, lens, 0.125, slopes)
    torch.testing.assert_close(out, paged_attention_ref(query, kc, vc, tables, lens, 0.125, slopes),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_size", [64, 128])
@pytest.mark.parametrize("heads", [(9, 3), (4, 4)], ids=["gqa", "mha"])
def test_prefill_and_chunked_prefill(cpu_isa, dtype, head_size, heads):
    num_heads, num_kv_heads = heads
    # (cached prefix, new tokens): a fresh prompt, a chunk after a cached
    # prefix, a single decode-like token, an odd chunk crossing blocks.
    plan = [(0, 37), (48, 20), (99, 1), (5, 70)]
    block_size, num_blocks = 16, 64
    kc, vc = make_cache(num_blocks, block_size, num_kv_heads, head_size, dtype)
    lens = torch.tensor([c + n for c, n in plan], dtype=torch.int32)
    tables = make_tables(lens.tolist(), block_size, num_blocks)
    starts = torch.tensor([0] + list(torch.tensor([n for _, n in plan]).cumsum(0)),
                          dtype=torch.int32)
    query = torch.randn(int(starts[-1]), num_heads, head_size).to(dtype)
    scale = head_size ** -0.5
    out = torch.full_like(query, float("nan"))
    ops.paged_attention_prefill(out, query, kc, vc, num_kv_heads, scale, tables, starts, lens,
                                None, "auto", SCALE_1, SCALE_1)
    expected = paged_attention_ref(query, kc, vc, tables, lens, scale, query_start_loc=starts)
    torch.testing.assert_close(out, expected, **TOL[dtype])


def test_prefill_after_reshape_and_cache_matches_dense_causal_attention(cpu_isa):
    """The engine's path: write a prompt's K/V with reshape_and_cache, then
    attend; equals plain causal attention on the contiguous tensors."""
    tokens, num_heads, num_kv_heads, head_size, block_size = 45, 6, 2, 64, 16
    q = torch.randn(tokens, num_heads, head_size)
    k = torch.randn(tokens, num_kv_heads, head_size)
    v = torch.randn(tokens, num_kv_heads, head_size)
    kc, vc = make_cache(8, block_size, num_kv_heads, head_size, torch.float32)
    table = torch.tensor([[5, 2, 7]], dtype=torch.int32)
    slots = torch.tensor([int(table[0, t // block_size]) * block_size + t % block_size
                          for t in range(tokens)])
    ops.reshape_and_cache(k, v, kc, vc, slots, "auto", SCALE_1, SCALE_1)
    out = torch.full_like(q, float("nan"))
    ops.paged_attention_prefill(out, q, kc, vc, num_kv_heads, 0.125, table,
                                torch.tensor([0, tokens], dtype=torch.int32),
                                torch.tensor([tokens], dtype=torch.int32), None, "auto",
                                SCALE_1, SCALE_1)
    dense = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.repeat_interleave(3, 1).transpose(0, 1),
        v.repeat_interleave(3, 1).transpose(0, 1), is_causal=True, scale=0.125).transpose(0, 1)
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)


def test_bad_block_table_is_an_error():
    kc, vc = make_cache(4, 16, 1, 64, torch.float32)
    query = torch.randn(1, 1, 64)
    with pytest.raises(RuntimeError, match="outside the cache"):
        run_v1(query, kc, vc, torch.tensor([[9]], dtype=torch.int32),
               torch.tensor([3], dtype=torch.int32), 1.0)
    with pytest.raises(RuntimeError, match="needs more blocks"):
        run_v1(query, kc, vc, torch.tensor([[0]], dtype=torch.int32),
               torch.tensor([17], dtype=torch.int32), 1.0)
    with pytest.raises(RuntimeError, match="block-sparse"):
        ops.paged_attention_v1(torch.empty_like(query), query, kc, vc, 1, 1.0,
                               torch.tensor([[0]], dtype=torch.int32),
                               torch.tensor([3], dtype=torch.int32), 16, 3, None, "auto",
                               SCALE_1, SCALE_1, 0, 1, 0, 0, 0)


def test_opcheck_attention():
    kc, vc = make_cache(8, 16, 2, 64, torch.bfloat16)
    lens = torch.tensor([20, 3], dtype=torch.int32)
    tables = make_tables(lens.tolist(), 16, 8)
    query = torch.randn(2, 4, 64).to(torch.bfloat16)
    torch.library.opcheck(torch.ops._C.paged_attention_v1.default,
                          (torch.empty_like(query), query, kc, vc, 2, 0.125, tables, lens, 16, 20,
                           None, "auto", SCALE_1, SCALE_1, 0, 0, 0, 0, 0))
    exp_sums = torch.empty(2, 4, 1)
    tmp_out = torch.empty(2, 4, 1, 64, dtype=torch.bfloat16)
    torch.library.opcheck(torch.ops._C.paged_attention_v2.default,
                          (torch.empty_like(query), exp_sums, torch.empty_like(exp_sums), tmp_out,
                           query, kc, vc, 2, 0.125, tables, lens, 16, 20, None, "auto", SCALE_1,
                           SCALE_1, 0, 0, 0, 0, 0))
    starts = torch.tensor([0, 2, 3], dtype=torch.int32)
    prefill_q = torch.randn(3, 4, 64).to(torch.bfloat16)
    torch.library.opcheck(torch.ops._C.paged_attention_prefill.default,
                          (torch.empty_like(prefill_q), prefill_q, kc, vc, 2, 0.125, tables,
                           starts, lens, None, "auto", SCALE_1, SCALE_1))
