"""GPU kernel timings: our CUDA kernels against the torch-native composition
each replaces (the Triton decode kernels beside the CUDA paged and MLA
attention), in one run, with the device's measured copy bandwidth for scale.

    VLLM_TARGET_DEVICE=cuda pip install --no-build-isolation .
    python bench/kernels/cuda_bench.py [--out results.md]

GPU work is timed with CUDA events around `iters` back-to-back calls after a
warm-up (host timers would time the launch queue, not the kernels). Bytes are
what a kernel must move at least (inputs read once, outputs written once),
so GB/s is comparable with the copy bandwidth (bytes read + written).
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from vllm import _custom_ops as ops
from vllm.attention.kv_cache_layout import kv_cache_shapes

ONE = None  # set in main, on the GPU


def gpu_time_us(fn, iters: int = 50, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / iters


def copy_bandwidth_gbs() -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = gpu_time_us(lambda: dst.copy_(src), iters=20)
    return 2 * src.numel() / us / 1e3


def rms_norm_native(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def bench_norms(rows, dtype):
    tokens, hidden = 4096, 4096
    x = torch.randn(tokens, hidden, dtype=dtype, device="cuda")
    res = torch.randn_like(x)
    w = torch.randn(hidden, dtype=dtype, device="cuda")
    out = torch.empty_like(x)
    nbytes = 2 * x.numel() * x.element_size()
    ours = gpu_time_us(lambda: ops.rms_norm(out, x, w, 1e-6))
    native = gpu_time_us(lambda: rms_norm_native(x, w, 1e-6))
    rows.append(("rms_norm 4096x4096", dtype, ours, native, nbytes))

    def native_fused():
        s = x + res
        return rms_norm_native(s, w, 1e-6), s
    ours = gpu_time_us(lambda: ops.fused_add_rms_norm(x, res, w, 1e-6))
    rows.append(("fused_add_rms_norm 4096x4096", dtype, ours, gpu_time_us(native_fused),
                 2 * nbytes))


def bench_activations(rows, dtype):
    tokens, d = 4096, 8192
    x = torch.randn(tokens, 2 * d, dtype=dtype, device="cuda")
    out = torch.empty(tokens, d, dtype=dtype, device="cuda")
    nbytes = (x.numel() + out.numel()) * x.element_size()
    ours = gpu_time_us(lambda: ops.silu_and_mul(out, x))
    native = gpu_time_us(lambda: F.silu(x[:, :d]) * x[:, d:])
    rows.append(("silu_and_mul 4096x2x8192", dtype, ours, native, nbytes))
    ours = gpu_time_us(lambda: ops.gelu_tanh_and_mul(out, x))
    native = gpu_time_us(lambda: F.gelu(x[:, :d], approximate="tanh") * x[:, d:])
    rows.append(("gelu_tanh_and_mul 4096x2x8192", dtype, ours, native, nbytes))


def rotary_native(positions, q, k, head_size, cache):
    # NeoX style, rotary dim == head size: what the op replaces in a model.
    cos, sin = cache[positions].chunk(2, dim=-1)
    out = []
    for x in (q, k):
        x = x.view(x.shape[0], -1, head_size)
        x1, x2 = x.chunk(2, dim=-1)
        c, s = cos[:, None, :], sin[:, None, :]
        out.append(torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1))
    return out


def bench_rotary(rows, dtype):
    tokens, heads, kv_heads, head_size = 4096, 32, 8, 128
    inv = 1.0 / (10000 ** (torch.arange(0, head_size, 2, device="cuda") / head_size))
    freqs = torch.arange(8192, device="cuda")[:, None] * inv[None, :]
    cache = torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(dtype)
    positions = torch.randint(0, 8192, (tokens,), device="cuda")
    q = torch.randn(tokens, heads * head_size, dtype=dtype, device="cuda")
    k = torch.randn(tokens, kv_heads * head_size, dtype=dtype, device="cuda")
    nbytes = 2 * (q.numel() + k.numel()) * q.element_size()
    ours = gpu_time_us(lambda: ops.rotary_embedding(positions, q, k, head_size, cache, True))
    native = gpu_time_us(lambda: rotary_native(positions, q, k, head_size, cache))
    rows.append(("rotary_embedding neox 4096 tok 32+8 heads x128", dtype, ours, native, nbytes))


def bench_cache_write(rows, dtype):
    tokens, kv_heads, head_size, block_size, num_blocks = 8192, 8, 128, 16, 4096
    shapes = kv_cache_shapes(num_blocks, block_size, kv_heads, head_size, "cuda")
    kc = torch.zeros(shapes.key, dtype=dtype, device="cuda")
    vc = torch.zeros(shapes.value, dtype=dtype, device="cuda")
    key = torch.randn(tokens, kv_heads, head_size, dtype=dtype, device="cuda")
    value = torch.randn_like(key)
    nbytes = 4 * key.numel() * key.element_size()
    # Scattered slots (decode-like: one token per block) and whole blocks in
    # a random block order (prefill-like).
    scattered = torch.randperm(num_blocks * block_size, device="cuda")[:tokens]
    whole = (torch.randperm(num_blocks, device="cuda")[: tokens // block_size, None] * block_size
             + torch.arange(block_size, device="cuda")).flatten()
    for label, slots in (("scattered", scattered), ("whole blocks", whole)):
        blocks, offsets = slots // block_size, slots % block_size

        def native():
            kc[blocks, :, :, offsets] = key
            vc[blocks, :, offsets, :] = value
        ours = gpu_time_us(
            lambda: ops.reshape_and_cache(key, value, kc, vc, slots, "auto", ONE, ONE))
        rows.append((f"reshape_and_cache 8192 tok 8x128, {label}", dtype, ours,
                     gpu_time_us(native), nbytes))


def bench_decode(rows, dtype, num_seqs, context, heads, kv_heads, head_size, block_size=16):
    from vllm.triton_ops.paged_decode_attention import paged_decode_attention
    blocks_per_seq = math.ceil(context / block_size)
    num_blocks = num_seqs * blocks_per_seq
    shapes = kv_cache_shapes(num_blocks, block_size, kv_heads, head_size, "cuda")
    kc = torch.randn(shapes.key, dtype=dtype, device="cuda")
    vc = torch.randn(shapes.value, dtype=dtype, device="cuda")
    tables = torch.randperm(num_blocks, device="cuda", dtype=torch.int32).view(num_seqs, -1)
    lens = torch.full((num_seqs,), context, dtype=torch.int32, device="cuda")
    q = torch.randn(num_seqs, heads, head_size, dtype=dtype, device="cuda")
    out = torch.empty_like(q)
    scale = head_size ** -0.5
    parts = math.ceil(context / ops.PARTITION_SIZE)
    exp_sums = torch.empty(num_seqs, heads, parts, device="cuda")
    max_logits = torch.empty_like(exp_sums)
    tmp = torch.empty(num_seqs, heads, parts, head_size, dtype=dtype, device="cuda")
    nbytes = 2 * num_seqs * context * kv_heads * head_size * kc.element_size()
    name = f"decode {num_seqs} seq x {context} tok, {heads}/{kv_heads} heads x{head_size}"
    v1 = gpu_time_us(lambda: ops.paged_attention_v1(out, q, kc, vc, kv_heads, scale, tables, lens,
                                                    block_size, context, None, "auto", ONE, ONE))
    v2 = gpu_time_us(lambda: ops.paged_attention_v2(out, exp_sums, max_logits, tmp, q, kc, vc,
                                                    kv_heads, scale, tables, lens, block_size,
                                                    context, None, "auto", ONE, ONE))
    tri = gpu_time_us(lambda: paged_decode_attention(out, q, kc, vc, tables, lens, scale))
    rows.append((name + " [v1 vs Triton]", dtype, v1, tri, nbytes))
    rows.append((name + " [v2 vs Triton]", dtype, v2, tri, nbytes))


def bench_mla_decode(rows, dtype, num_seqs, context, heads=16, lora=512, rope=64,
                     block_size=64):
    """MLA decode over the latent cache: our CUDA kernel vs the Triton one
    (DeepSeek's 512 + 64 latent; bytes = the latents read once)."""
    from vllm.triton_ops.mla_decode_attention import mla_decode_attention
    blocks_per_seq = math.ceil(context / block_size)
    num_blocks = num_seqs * blocks_per_seq
    cache = torch.randn(num_blocks, block_size, lora + rope, dtype=dtype, device="cuda")
    tables = torch.randperm(num_blocks, device="cuda", dtype=torch.int32).view(num_seqs, -1)
    lens = torch.full((num_seqs,), context, dtype=torch.int32, device="cuda")
    q = torch.randn(num_seqs, heads, lora + rope, dtype=dtype, device="cuda")
    out = torch.empty(num_seqs, heads, lora, dtype=dtype, device="cuda")
    nbytes = num_seqs * context * (lora + rope) * cache.element_size()
    ours = gpu_time_us(lambda: ops.mla_decode_kvcache(out, q, cache, 0.07, tables, lens))
    tri = gpu_time_us(lambda: mla_decode_attention(out, q, cache, tables, lens, 0.07))
    rows.append((f"MLA decode {num_seqs} seq x {context} tok, {heads} heads [CUDA vs Triton]",
                 dtype, ours, tri, nbytes))


def main() -> None:
    global ONE
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    torch.manual_seed(0)
    ONE = torch.tensor(1.0, device="cuda")
    copy_gbs = copy_bandwidth_gbs()
    rows = []
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        bench_norms(rows, dtype)
        bench_activations(rows, dtype)
        bench_rotary(rows, dtype)
        bench_cache_write(rows, dtype)
    for dtype in (torch.bfloat16, torch.float16):
        bench_decode(rows, dtype, 32, 2048, 32, 8, 64)
        bench_decode(rows, dtype, 32, 2048, 32, 8, 128)
        bench_decode(rows, dtype, 256, 1024, 32, 8, 128)
        bench_decode(rows, dtype, 4, 16384, 32, 8, 128)
        bench_decode(rows, dtype, 1, 32768, 32, 8, 128)
        bench_mla_decode(rows, dtype, 32, 2048)
        bench_mla_decode(rows, dtype, 128, 1024, heads=128)
        bench_mla_decode(rows, dtype, 1, 32768)
    lines = [f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; "
             f"copy bandwidth {copy_gbs:.0f} GB/s (read + write)", "",
             "| kernel | dtype | ours µs | reference µs | reference / ours | ours GB/s | "
             "% of copy |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, dtype, ours, ref, nbytes in rows:
        gbs = nbytes / ours / 1e3
        lines.append(f"| {name} | {str(dtype).removeprefix('torch.')} | {ours:.1f} | {ref:.1f} | "
                     f"{ref / ours:.2f} | {gbs:.0f} | {100 * gbs / copy_gbs:.0f}% |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
