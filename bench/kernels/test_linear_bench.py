"""Linear's paths (small_m_linear, packed oneDNN) vs torch's F.linear on
SmolLM2-135M's shapes (bf16).

    python -m pytest bench/kernels/test_linear_bench.py --benchmark-only \
        --benchmark-group-by=param:shape,param:threads

Decode with a handful of sequences reads every weight once per step, so the
figure that matters is the achieved read bandwidth: bytes of weight / time
(extra_info["bytes"]). Not part of the test suite.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vllm import _custom_ops as ops

# (rows, out_features, in_features): decode with 1-16 sequences (qkv, gate_up,
# down, o, lm_head), then batched decode / prefill (64 and 512 rows).
SHAPES = [(1, 960, 576), (1, 3072, 576), (1, 576, 1536), (1, 576, 576), (1, 49152, 576),
          (4, 3072, 576), (16, 3072, 576),
          (64, 960, 576), (64, 3072, 576), (64, 576, 1536), (512, 3072, 576)]


# vllm: small_m_linear (Linear's path up to 3 rows); packed: oneDNN on the
# weight packed once at load (Linear's path above 3 rows); torch: F.linear,
# which re-lays the weight out for oneDNN on every call.
@pytest.mark.parametrize("impl", ["vllm", "packed", "torch"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
def test_linear(benchmark, threads, shape, impl):
    from vllm.model_executor.layers.linear import apply_linear, pack_weight_for_onednn
    m, n, k = shape
    if (impl == "vllm" and m > 16) or (impl == "packed" and m <= 3):
        pytest.skip("not a path Linear takes for this many rows")
    x = torch.randn(m, k).to(torch.bfloat16)
    w = torch.randn(n, k).to(torch.bfloat16)
    benchmark.extra_info["bytes"] = w.numel() * 2
    benchmark.extra_info["GFLOP"] = 2 * m * n * k / 1e9
    if impl == "vllm":
        out = torch.empty(m, n, dtype=torch.bfloat16)
        benchmark(ops.small_m_linear, out, x, w, None)
    elif impl == "packed":
        packed = pack_weight_for_onednn(w)
        if packed is None:
            pytest.skip("no oneDNN bf16 path on this CPU")
        benchmark(apply_linear, x, w, None, packed)
    else:
        benchmark(F.linear, x, w)
