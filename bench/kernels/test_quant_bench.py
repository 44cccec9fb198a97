"""quant_linear (4-bit weights, group 32: the embedded SmolLM2's Q4_1) against
our bf16 packed_linear on SmolLM2-135M's shapes, weights streamed from DRAM
(copies worth 150 MB cycled, as a decode step reads them), in one run:

    python -m pytest bench/kernels/test_quant_bench.py --benchmark-only \
        --benchmark-group-by=param:shape --benchmark-json=quant.json
    python bench/kernels/quant_table.py quant.json

impls: bf16 (packed_linear), q4int8 (x quantized to int8, integer dot
products: the path decode steps take), q4bf16 (the
weight expanded to bf16 per panel, packed_linear's micro-kernel: the path
prompts and larger bf16 batches take). Goals (issue 20): batch-1 >= 2.5x
bf16, M = 64 no slower than bf16. extra_info["bytes"]: the weight bytes a
call reads (the 4-bit packing: 0.625 bytes a weight). Not part of the test
suite; prefix VLLM_CPU_ISA=avx2 for the AVX2 kernels.
"""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers import linear
from vllm.model_executor.layers.quantization.packing import QuantizedWeight, pack_quantized

SHAPES = [(m, n, k) for m in (1, 16, 64, 512)
          for n, k in [(960, 576), (3072, 576), (576, 1536), (49152, 576)]]
STREAMED_BYTES = 150e6  # well past the 32 MiB L3
IMPLS = ["bf16", "q4int8", "q4bf16"]


def _random_q4(n: int, k: int) -> QuantizedWeight:
    return QuantizedWeight(torch.randint(0, 16, (n, k), dtype=torch.uint8),
                           (torch.rand(n, k // 32) * 0.01).half(),
                           (torch.rand(n, k // 32) * -0.08).half(), 4, 32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
def test_quant_linear_streamed(benchmark, shape, impl):
    if not ops.quant_linear_available() or not ops.packed_linear_available():
        pytest.skip("needs quant_linear and packed_linear (AVX512 or AVX2 variant)")
    m, n, k = shape
    x = torch.randn(m, k).to(torch.bfloat16)
    out = torch.empty(m, n, dtype=torch.bfloat16)
    if impl == "bf16":
        copies = max(1, int(STREAMED_BYTES / (n * k * 2)))
        weights = [linear.pack_weight_pairs((torch.randn(n, k) * 0.05).to(torch.bfloat16))
                   for _ in range(copies)]
        call = lambda w: ops.packed_linear(out, x, w, None)  # noqa: E731
        benchmark.extra_info["bytes"] = n * k * 2
    else:
        if impl == "q4bf16" and m == 1:
            pytest.skip("decode rows take the int8 path")
        copies = max(1, int(STREAMED_BYTES / (n * k * 0.625)))
        weights = [pack_quantized(_random_q4(n, k)) for _ in range(copies)]
        rows = 1 << 30 if impl == "q4int8" else 0
        call = lambda w: ops.quant_linear(out, x, w, 4, 32, None, rows)  # noqa: E731
        benchmark.extra_info["bytes"] = weights[0].numel()
    benchmark.extra_info["GFLOP"] = 2 * m * n * k / 1e9
    state = {"i": 0}

    def next_copy():
        call(weights[state["i"]])
        state["i"] = (state["i"] + 1) % copies

    benchmark(next_copy)
