"""One decode step's paged attention over every layer of a model, each
layer with its own K/V cache, so the step reads its K/V from DRAM as the
engine's does (the pytest-benchmark cases in test_attention_bench.py rerun
one layer, whose cache may stay in the last-level cache).

    python bench/kernels/attention_decode_step.py [--seqs 64 --ctx 174 --hot]
    VLLM_CPU_ISA=avx2 python bench/kernels/attention_decode_step.py

Defaults: SmolLM2-135M's shapes (30 layers, 9 query / 3 KV heads of 64),
bf16, blocks of 16 placed at random. --hot reuses one layer's cache for
every layer (the kernel's compute, with the K/V in cache). Prints the
median of 7 steps and the K/V bytes read per second."""
from __future__ import annotations

import argparse
import time

import torch

from vllm import _custom_ops as ops
from vllm.attention.kv_cache_layout import kv_cache_shapes


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seqs", type=int, default=64)
    p.add_argument("--ctx", type=int, default=174)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--heads", type=int, default=9)
    p.add_argument("--kv-heads", type=int, default=3)
    p.add_argument("--head-size", type=int, default=64)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--hot", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    bs, hs = args.block_size, args.head_size
    per_seq = (args.ctx + bs - 1) // bs
    blocks = args.seqs * per_seq
    shapes = kv_cache_shapes(blocks, bs, args.kv_heads, hs)

    def cache():
        return (torch.randn(shapes.key).bfloat16(), torch.randn(shapes.value).bfloat16())

    caches = [cache()] * args.layers if args.hot else [cache() for _ in range(args.layers)]
    tables = torch.randperm(blocks).reshape(args.seqs, per_seq).to(torch.int32)
    lens = torch.full((args.seqs,), args.ctx, dtype=torch.int32)
    query = torch.randn(args.seqs, args.heads, hs).bfloat16()
    out = torch.empty_like(query)
    one = torch.ones((), dtype=torch.float32)

    def step():
        for k, v in caches:
            ops.paged_attention_v1(out, query, k, v, args.kv_heads, hs ** -0.5, tables, lens, bs,
                                   args.ctx, None, "auto", one, one)

    step()
    times = []
    for _ in range(7):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    median = sorted(times)[3]
    kv = args.layers * args.seqs * args.ctx * args.kv_heads * hs * 2 * 2
    print(f"{ops.cpu_isa()}: {median * 1e3:.2f} ms a step ({args.layers} layers, "
          f"{'hot' if args.hot else 'cold'} K/V {kv / 1e6:.0f} MB: {kv / median / 1e9:.1f} GB/s)")


if __name__ == "__main__":
    main()
