"""Paged decode attention: our CPU kernel (v1, v2) vs the torch-native
composition (gather the blocks, SDPA), and the bandwidth it reaches.

    python -m pytest bench/kernels/test_attention_bench.py --benchmark-only

extra_info["GB/s"] = K+V bytes read / median time; compare with
bench/kernels/bandwidth.py on the same machine.
"""
from __future__ import annotations

import math

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.attention.kv_cache_layout import kv_cache_shapes
from vllm.worker.cpu_worker import _lazy_zeros

ONE = torch.tensor(1.0)
CASES = {
    # the long-context case: 32 seqs x 2k tokens x 8 KV heads x 64
    "32x2048-kv8-h64": dict(seqs=32, ctx=2048, heads=32, kv_heads=8, head_size=64),
    # SmolLM2-135M shapes: 9 query / 3 KV heads of 64
    "64x256-smollm2": dict(seqs=64, ctx=256, heads=9, kv_heads=3, head_size=64),
    "1x4096-smollm2": dict(seqs=1, ctx=4096, heads=9, kv_heads=3, head_size=64),
}


def cache_tensor(shape, dtype, pages="huge"):
    # the engine's allocation, every page touched (as in a server that has
    # run a while); the page size changes the bandwidth scattered block reads
    # reach, and the engine picks small pages on VMs where fresh huge pages
    # fault in slowly (vllm/hugepages.py), so decode runs on both
    return _lazy_zeros(shape, dtype, huge=pages == "huge").copy_(torch.randn(shape, dtype=dtype))


def setup(case, dtype=torch.bfloat16, block_size=16, pages="huge"):
    c = CASES[case]
    blocks_per_seq = math.ceil(c["ctx"] / block_size)
    num_blocks = c["seqs"] * blocks_per_seq
    shapes = kv_cache_shapes(num_blocks, block_size, c["kv_heads"], c["head_size"])
    kc, vc = cache_tensor(shapes.key, dtype, pages), cache_tensor(shapes.value, dtype, pages)
    tables = torch.randperm(num_blocks).reshape(c["seqs"], blocks_per_seq).to(torch.int32)
    lens = torch.full((c["seqs"],), c["ctx"], dtype=torch.int32)
    query = torch.randn(c["seqs"], c["heads"], c["head_size"], dtype=dtype)
    kv_bytes = 2 * c["seqs"] * c["ctx"] * c["kv_heads"] * c["head_size"] * kc.element_size()
    return c, kc, vc, tables, lens, query, kv_bytes


def torch_native(query, kc, vc, tables, lens, scale):
    # gather each sequence's blocks into contiguous K/V, then SDPA per batch
    seqs, heads, head_size = query.shape
    kv_heads = kc.shape[1]
    k = kc[tables.long()].permute(0, 2, 1, 4, 3).reshape(seqs, kv_heads, -1, head_size)
    v = vc[tables.long()].permute(0, 2, 1, 3, 4).reshape(seqs, kv_heads, -1, head_size)
    return torch.nn.functional.scaled_dot_product_attention(
        query.unsqueeze(2), k, v, scale=scale, enable_gqa=True).squeeze(2)


@pytest.mark.parametrize("impl", ["vllm", "vllm_v2", "torch"])
@pytest.mark.parametrize("pages", ["huge", "small"])
@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_paged_decode(benchmark, threads, case, block_size, pages, impl):
    c, kc, vc, tables, lens, query, kv_bytes = setup(case, block_size=block_size, pages=pages)
    scale = c["head_size"] ** -0.5
    out = torch.empty_like(query)
    if impl == "vllm":
        benchmark(ops.paged_attention_v1, out, query, kc, vc, c["kv_heads"], scale, tables, lens,
                  kc.shape[3], c["ctx"], None, "auto", ONE, ONE)
    elif impl == "vllm_v2":
        parts = math.ceil(c["ctx"] / ops.PARTITION_SIZE)
        exp_sums = torch.empty(c["seqs"], c["heads"], parts)
        max_logits = torch.empty_like(exp_sums)
        tmp = torch.empty(c["seqs"], c["heads"], parts, c["head_size"], dtype=query.dtype)
        benchmark(ops.paged_attention_v2, out, exp_sums, max_logits, tmp, query, kc, vc,
                  c["kv_heads"], scale, tables, lens, kc.shape[3], c["ctx"], None, "auto", ONE,
                  ONE)
    else:
        benchmark(torch_native, query, kc, vc, tables, lens, scale)
    benchmark.extra_info["GB/s"] = kv_bytes / benchmark.stats.stats.median / 1e9


def torch_native_prefill(query, kc, vc, table, seq_len, scale):
    # gather the sequence's blocks, then causal SDPA (one sequence, no prefix)
    kv_heads, head_size = kc.shape[1], kc.shape[2]
    k = kc[table.long()].permute(1, 0, 3, 2).reshape(kv_heads, -1, head_size)[:, :seq_len]
    v = vc[table.long()].permute(1, 0, 2, 3).reshape(kv_heads, -1, head_size)[:, :seq_len]
    return torch.nn.functional.scaled_dot_product_attention(
        query.transpose(0, 1), k, v, is_causal=True, scale=scale, enable_gqa=True).transpose(0, 1)


@pytest.mark.parametrize("impl", ["vllm", "torch"])
@pytest.mark.parametrize("tokens", [128, 512])
def test_prefill_smollm2(benchmark, threads, tokens, impl):
    """One prompt of `tokens` tokens, SmolLM2-135M shapes (9 / 3 heads of 64)."""
    heads, kv_heads, head_size, block_size = 9, 3, 64, 32
    blocks = math.ceil(tokens / block_size)
    shapes = kv_cache_shapes(blocks + 4, block_size, kv_heads, head_size)
    kc = cache_tensor(shapes.key, torch.bfloat16)
    vc = cache_tensor(shapes.value, torch.bfloat16)
    table = torch.randperm(blocks + 4)[:blocks].to(torch.int32).reshape(1, -1)
    query = torch.randn(tokens, heads, head_size, dtype=torch.bfloat16)
    scale = head_size ** -0.5
    if impl == "vllm":
        out = torch.empty_like(query)
        starts = torch.tensor([0, tokens], dtype=torch.int32)
        lens = torch.tensor([tokens], dtype=torch.int32)
        benchmark(ops.paged_attention_prefill, out, query, kc, vc, kv_heads, scale, table, starts,
                  lens, None, "auto", ONE, ONE)
    else:
        benchmark(torch_native_prefill, query, kc, vc, table[0], tokens, scale)


def engine_block_table(seqs, prompt_blocks, blocks_per_seq):
    # as the engine hands them out: each prompt's blocks in a row, then the
    # decode blocks round-robin over the batch as the sequences grow
    table = torch.zeros(seqs, blocks_per_seq, dtype=torch.int32)
    nxt = 0
    for s in range(seqs):
        for j in range(min(prompt_blocks, blocks_per_seq)):
            table[s, j], nxt = nxt, nxt + 1
    for j in range(prompt_blocks, blocks_per_seq):
        for s in range(seqs):
            table[s, j], nxt = nxt, nxt + 1
    return table


@pytest.mark.parametrize("pages", ["huge", "small"])
def test_paged_decode_streamed(benchmark, threads, pages):
    """One decode step's attention over 30 layers, as in the 64 x (158 + 128)
    throughput workload halfway through: 64 sequences of 222 tokens, SmolLM2
    shapes, 32-token blocks. The 30 layers' caches (~330 MB) cannot stay in
    the 32 MiB L3, so every call reads its KV from DRAM, as in the engine
    (the hot-cache cases above hold one layer's ~13 MB in L3)."""
    seqs, ctx, heads, kv_heads, head_size, block_size, layers = 64, 222, 9, 3, 64, 32, 30
    blocks_per_seq = math.ceil(ctx / block_size)
    shapes = kv_cache_shapes(seqs * blocks_per_seq, block_size, kv_heads, head_size)
    caches = [(cache_tensor(shapes.key, torch.bfloat16, pages),
               cache_tensor(shapes.value, torch.bfloat16, pages)) for _ in range(layers)]
    table = engine_block_table(seqs, math.ceil(158 / block_size), blocks_per_seq)
    lens = torch.full((seqs,), ctx, dtype=torch.int32)
    query = torch.randn(seqs, heads, head_size, dtype=torch.bfloat16)
    out = torch.empty_like(query)
    scale = head_size ** -0.5

    def step():
        for kc, vc in caches:
            ops.paged_attention_v1(out, query, kc, vc, kv_heads, scale, table, lens, block_size,
                                   ctx, None, "auto", ONE, ONE)

    benchmark(step)
    kv_bytes = 2 * seqs * ctx * kv_heads * head_size * 2 * layers
    benchmark.extra_info["GB/s"] = kv_bytes / benchmark.stats.stats.median / 1e9
