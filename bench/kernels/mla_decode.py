"""MLA attention on CPU against the machine's limits and against the
per-head cache the same model would need without MLA, in one process; and
prefill, absorbed (what the engine runs) against up-projected.

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

Prefill of one P-token prompt, one layer's attention from the projections
on (bf16): absorbed = W_UK folded into the queries (bmm), mla_prefill_kvcache
over the latents, W_UV after (bmm); up-projected = kv_b_proj on every latent
(keys and values per head, as VLLM_MLA_PERFORM_MATRIX_ABSORPTION=0 runs),
then causal attention (torch SDPA). Absorbed attention does (576 + 512) /
(192 + 128) = 3.4x the multiply-adds per (query, position) pair but skips
the up-projection, so which is cheaper depends on P.
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


def time_prefill(prompt: int, dtype: torch.dtype = torch.bfloat16) -> tuple[float, float]:
    """(absorbed, up-projected) seconds for one prompt's attention."""
    from vllm.attention.backends.torch_sdpa import causal_attention
    block_size = 32
    tables, blocks = tables_for(1, prompt, block_size)
    cache = torch.randn(blocks, block_size, LATENT).to(dtype)
    q_nope = torch.randn(prompt, HEADS, NOPE).to(dtype)
    q_pe = torch.randn(prompt, HEADS, ROPE).to(dtype)
    w_kv_b = (torch.randn(HEADS * (NOPE + 128), LORA) / LORA ** 0.5).to(dtype)
    per_head = w_kv_b.view(HEADS, NOPE + 128, LORA)
    w_uk, w_uv_t = per_head[:, :NOPE].contiguous(), per_head[:, NOPE:].transpose(1, 2).contiguous()
    lens = torch.tensor([prompt], dtype=torch.int32)
    starts = torch.tensor([0, prompt], dtype=torch.int32)
    out_latent = torch.empty(prompt, HEADS, LORA, dtype=dtype)

    def absorbed():
        q_latent = torch.bmm(q_nope.transpose(0, 1), w_uk)
        query = torch.cat([q_latent.transpose(0, 1), q_pe], dim=-1)
        ops.mla_prefill_kvcache(out_latent, query, cache, 0.07, tables, starts, lens)
        return torch.bmm(out_latent.transpose(0, 1), w_uv_t)

    def up_projected():
        latents = cache[tables[0].long()].reshape(-1, LATENT)[:prompt]
        kv = torch.nn.functional.linear(latents[:, :LORA], w_kv_b).view(prompt, HEADS, -1)
        keys = torch.cat([kv[..., :NOPE], latents[:, None, LORA:].expand(prompt, HEADS, ROPE)],
                         dim=-1)
        return causal_attention(torch.cat([q_nope, q_pe], -1), keys, kv[..., NOPE:], 0.07)

    return median_seconds(absorbed, 5), median_seconds(up_projected, 5)


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
    print()
    print("| prompt (bf16) | absorbed | up-projected | up-projected / absorbed |")
    print("|---|---|---|---|")
    for prompt in (158, 512, 2048):
        absorbed, up_projected = time_prefill(prompt)
        print(f"| {prompt} | {absorbed * 1e3:.2f} ms | {up_projected * 1e3:.2f} ms | "
              f"{up_projected / absorbed:.2f}x |")


if __name__ == "__main__":
    main()
