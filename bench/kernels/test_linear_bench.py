"""Linear's paths (packed_linear on our pair-packed weight, small_m_linear,
oneDNN on its packed weight) vs torch's F.linear on SmolLM2-135M's shapes
(bf16), and vs torch's fp32 F.linear (what an AVX2 user runs instead).

    python -m pytest bench/kernels/test_linear_bench.py --benchmark-only \
        --benchmark-group-by=param:shape,param:threads

packed_linear runs the active kernel variant's micro-kernel: AVX512-BF16 on
such CPUs; prefix VLLM_CPU_ISA=avx2 for the AVX2 one (bf16 widened to fp32
FMAs), whose yardstick is the fp32 FMA peak (bench/kernels/fma_peak.py).

test_linear reuses one weight (hot in cache for all but the LM head);
test_linear_streamed cycles through copies of it worth 300 MB, so every call
reads its weight from DRAM as a decode step does; test_gate_up_silu_streamed
does the same for the MLP's gate/up projection and activation, as two ops and
fused (packed_linear_gated).

Decode with a handful of sequences reads every weight once per step, so the
figure that matters is the achieved read bandwidth: bytes of weight / time
(extra_info["bytes"]). Not part of the test suite.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vllm import _custom_ops as ops
from vllm.model_executor.layers import linear

# (rows, out_features, in_features): decode with 1-16 sequences (qkv, gate_up,
# down, o, lm_head), then batched decode / prefill (64 and 512 rows).
SHAPES = [(1, 960, 576), (1, 3072, 576), (1, 576, 1536), (1, 576, 576), (1, 49152, 576),
          (4, 3072, 576), (16, 3072, 576),
          (64, 960, 576), (64, 3072, 576), (64, 576, 1536), (512, 3072, 576)]


# pairs: packed_linear on the pair-packed weight (Linear's path for bf16 on
# AVX512-BF16 and AVX2 CPUs); vllm: small_m_linear (scalar variant, up to 3
# rows); packed: oneDNN on the weight packed once at load (scalar, above 3
# rows); torch: F.linear, which re-lays the weight out for oneDNN on every
# call; torch-fp32: F.linear on fp32 copies (dtype=float32's path).
IMPLS = ["pairs", "vllm", "packed", "torch", "torch-fp32"]


def _call(impl, x, w):
    """A no-argument call of `impl` on x and w, or a reason to skip."""
    from vllm.model_executor.layers.linear import (apply_linear, pack_weight_for_onednn,
                                                   pack_weight_pairs)
    m, n = x.shape[0], w.shape[0]
    if impl == "torch-fp32":
        xf, wf = x.float(), w.float()
        return lambda: F.linear(xf, wf)
    if impl == "pairs":
        if not ops.packed_linear_available():
            return "packed_linear needs the AVX512-BF16 or AVX2 kernel variant"
        packed, out = pack_weight_pairs(w), torch.empty(m, n, dtype=torch.bfloat16)
        return lambda: ops.packed_linear(out, x, packed, None)
    if impl == "vllm":
        if m > 16:
            return "not a path Linear takes for this many rows"
        out = torch.empty(m, n, dtype=torch.bfloat16)
        return lambda: ops.small_m_linear(out, x, w, None)
    if impl == "packed":
        packed = pack_weight_for_onednn(w)
        if packed is None or m <= 3:
            return "no oneDNN bf16 path on this CPU, or not taken for <= 3 rows"
        return lambda: apply_linear(x, w, None, packed)
    return lambda: F.linear(x, w)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
def test_linear(benchmark, threads, shape, impl):
    m, n, k = shape
    x = torch.randn(m, k).to(torch.bfloat16)
    w = torch.randn(n, k).to(torch.bfloat16)
    call = _call(impl, x, w)
    if isinstance(call, str):
        pytest.skip(call)
    benchmark.extra_info["bytes"] = w.numel() * (4 if impl == "torch-fp32" else 2)
    benchmark.extra_info["GFLOP"] = 2 * m * n * k / 1e9
    benchmark(call)


STREAMED_SHAPES = [(rows, n, k) for rows in (1, 64, 2048)
                   for n, k in [(960, 576), (3072, 576), (576, 1536), (576, 576)]]
STREAMED_BYTES = 300e6  # well past the 32 MiB L3


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", STREAMED_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
def test_linear_streamed(benchmark, shape, impl):
    m, n, k = shape
    x = torch.randn(m, k).to(torch.bfloat16)
    copies = max(1, int(STREAMED_BYTES / (n * k * 2)))
    calls = []
    for _ in range(copies):
        call = _call(impl, x, (torch.randn(n, k) * 0.05).to(torch.bfloat16))
        if isinstance(call, str):
            pytest.skip(call)
        calls.append(call)
    state = {"i": 0}

    def next_copy():
        calls[state["i"]]()
        state["i"] = (state["i"] + 1) % copies

    benchmark.extra_info["bytes"] = n * k * (4 if impl == "torch-fp32" else 2)
    benchmark.extra_info["GFLOP"] = 2 * m * n * k / 1e9
    benchmark(next_copy)


# A gated MLP's gate/up projection and activation (SmolLM2: d = 1536, k = 576):
# packed_linear into [m, 2d] then silu_and_mul ("two-ops") against
# packed_linear_gated on the interleaved packing ("fused"); weights streamed.
GATED_ROWS = [1, 64, 512, 2048]


@pytest.mark.parametrize("impl", ["two-ops", "fused"])
@pytest.mark.parametrize("rows", GATED_ROWS)
def test_gate_up_silu_streamed(benchmark, rows, impl):
    if not ops.packed_linear_available():
        pytest.skip("needs packed_linear (AVX512-BF16 or AVX2 variant)")
    d, k = 1536, 576
    x = torch.randn(rows, k).to(torch.bfloat16)
    gate_up = torch.empty(rows, 2 * d, dtype=torch.bfloat16)
    out = torch.empty(rows, d, dtype=torch.bfloat16)
    copies = max(1, int(STREAMED_BYTES / (2 * d * k * 2)))
    weights = [(torch.randn(2 * d, k) * 0.05).to(torch.bfloat16) for _ in range(copies)]
    if impl == "fused":
        packed = [linear.pack_gate_up_pairs(w) for w in weights]
        call = lambda p: ops.packed_linear_gated(out, x, p, None, "silu")  # noqa: E731
    else:
        packed = [linear.pack_weight_pairs(w) for w in weights]

        def call(p):
            ops.packed_linear(gate_up, x, p, None)
            ops.silu_and_mul(out, gate_up)
    state = {"i": 0}

    def next_copy():
        call(packed[state["i"]])
        state["i"] = (state["i"] + 1) % copies

    benchmark.extra_info["bytes"] = 2 * d * k * 2
    benchmark.extra_info["GFLOP"] = 2 * rows * 2 * d * k / 1e9
    benchmark(next_copy)
