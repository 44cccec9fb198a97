"""MLA decode attention on CPU against the machine's limits and against the
per-head cache the same model would need without MLA, in one process.

    python bench/kernels/mla_decode.py [--threads N] [--isa avx512|avx2]

Shape: DeepSeek-V2-Lite's attention (16 heads; latent 512 + 64 rotary;
per head 128 + 64 key dims and 128 value dims). For each case it times
(median of 20, after 3 warm-ups):

- mla_decode_kvcache over the latent cache (what the engine runs);
- paged_attention_v1 over the per-head cache VLLM_MLA_DISABLE=1 keeps
  (keys of 192, values zero-padded to 192: the same model's alternative).

and reports the latent bytes read per second against the read bandwidth
(bench/kernels/bandwidth.py: read_gbps, measured before and after), and the
FLOPs (2 x heads x (576 + 512) per cached position) against the fp32 FMA
peak (bench/kernels/fma_peak.py). At 16 heads MLA decode does ~34 FLOPs per
cached bf16 byte: on a CPU it is bound by the FMAs, not by memory.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.kernels.bandwidth import read_gbps  # noqa: E402
from bench.kernels.fma_peak import fma_peak_gflops  # noqa: E402
from vllm import _custom_ops as ops  # noqa: E402
from vllm.attention.kv_cache_layout import kv_cache_shapes  # noqa: E402

HEADS, LORA, ROPE, NOPE = 16, 512, 64, 128
LATENT = LORA + ROPE
ONE = torch.tensor(1.0)
CASES = [(1, 4096), (8, 2048), (32, 1024)]  # (sequences, context)


def median_seconds(fn, repeat: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tables_for(seqs: int, ctx: int, block_size: int) -> tuple[torch.Tensor, int]:
    per_seq = math.ceil(ctx / block_size)
    return torch.randperm(seqs * per_seq).reshape(seqs, per_seq).to(torch.int32), seqs * per_seq


def time_mla(seqs: int, ctx: int, dtype: torch.dtype, block_size: int = 32) -> tuple[float, int]:
    tables, blocks = tables_for(seqs, ctx, block_size)
    cache = torch.randn(blocks, block_size, LATENT).to(dtype)
    query = torch.randn(seqs, HEADS, LATENT).to(dtype)
    out = torch.empty(seqs, HEADS, LORA, dtype=dtype)
    lens = torch.full((seqs,), ctx, dtype=torch.int32)
    seconds = median_seconds(lambda: ops.mla_decode_kvcache(out, query, cache, 0.07, tables, lens))
    return seconds, seqs * ctx * LATENT * cache.element_size()


def time_per_head(seqs: int, ctx: int, dtype: torch.dtype, block_size: int = 32) -> float:
    head = NOPE + ROPE
    tables, blocks = tables_for(seqs, ctx, block_size)
    shapes = kv_cache_shapes(blocks, block_size, HEADS, head)
    kc, vc = torch.randn(shapes.key).to(dtype), torch.randn(shapes.value).to(dtype)
    query = torch.randn(seqs, HEADS, head).to(dtype)
    out = torch.empty_like(query)
    lens = torch.full((seqs,), ctx, dtype=torch.int32)
    return median_seconds(lambda: ops.paged_attention_v1(
        out, query, kc, vc, HEADS, 0.07, tables, lens, block_size, ctx, None, "auto", ONE, ONE))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--isa", default=None, help="force a kernel variant (VLLM_CPU_ISA)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.isa:
        ops._C.set_cpu_isa(args.isa)
    isa = ops.cpu_isa()
    peak = fma_peak_gflops("avx512" if isa == "avx512" else "avx2", args.threads)
    bandwidth_before = read_gbps()
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for seqs, ctx in CASES:
            seconds, latent_bytes = time_mla(seqs, ctx, dtype)
            per_head = time_per_head(seqs, ctx, dtype)
            rows.append((dtype, seqs, ctx, seconds, latent_bytes, per_head))
    bandwidth = min(bandwidth_before, read_gbps())
    print(f"isa={isa} threads={args.threads} read bandwidth {bandwidth:.1f} GB/s (lower of "
          f"before/after), fp32 FMA peak {peak:.0f} GFLOP/s")
    print("| dtype | seqs x context | MLA decode | latent GB/s (of bandwidth) | GFLOP/s "
          "(of FMA peak) | per-head cache decode | per-head / MLA time |")
    print("|---|---|---|---|---|---|---|")
    for dtype, seqs, ctx, seconds, latent_bytes, per_head in rows:
        gbps = latent_bytes / seconds / 1e9
        gflops = 2 * HEADS * (LATENT + LORA) * seqs * ctx / seconds / 1e9
        print(f"| {str(dtype).split('.')[-1]} | {seqs} x {ctx} | {seconds * 1e3:.2f} ms | "
              f"{gbps:.1f} ({gbps / bandwidth:.0%}) | {gflops:.0f} ({gflops / peak:.0%}) | "
              f"{per_head * 1e3:.2f} ms | {per_head / seconds:.2f}x |")


if __name__ == "__main__":
    main()
