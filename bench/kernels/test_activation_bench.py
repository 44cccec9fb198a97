"""Gated activations: our CPU kernels vs the torch-native composition
`act(x[..., :d]) * x[..., d:]`, 1 and 2 threads (see test_layernorm_bench)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vllm import _custom_ops as ops

# SmolLM2-135M MLP: intermediate 1536; decode (1, 64 seqs), prefill (512).
SHAPES = [(1, 1536), (64, 1536), (512, 1536)]
KERNELS = {"silu": (ops.silu_and_mul, F.silu), "gelu": (ops.gelu_and_mul, F.gelu)}


@pytest.mark.parametrize("impl", ["vllm", "torch"])
@pytest.mark.parametrize("kind", sorted(KERNELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_act_and_mul(benchmark, threads, shape, dtype, kind, impl):
    tokens, d = shape
    x = torch.randn(tokens, 2 * d, dtype=dtype)
    out = torch.empty(tokens, d, dtype=dtype)
    ours, act = KERNELS[kind]
    if impl == "vllm":
        benchmark(ours, out, x)
    else:
        benchmark(lambda: torch.mul(act(x[:, :d]), x[:, d:], out=out))
