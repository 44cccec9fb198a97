"""rms_norm: our CPU kernel vs the torch-native composition it replaces.

    OMP_WAIT_POLICY=PASSIVE python -m pytest bench/kernels --benchmark-only \
        --benchmark-group-by=param:shape,param:dtype,param:threads

Each shape runs both implementations with 1 and 2 threads in one session, so
the ratio is read off one table. Not part of the test suite.
"""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops

# SmolLM2-135M: hidden 576; decode (1, 64 seqs) and prefill (512 tokens);
# a Llama-7B-sized row for contrast.
SHAPES = [(1, 576), (64, 576), (512, 576), (64, 4096)]
DTYPES = [torch.float32, torch.bfloat16]


def torch_native(out, x, w, eps):
    xf = x.float()
    out.copy_((xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w)


@pytest.mark.parametrize("impl", ["vllm", "torch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_rms_norm(benchmark, threads, shape, dtype, impl):
    x = torch.randn(*shape, dtype=dtype)
    w = torch.randn(shape[1], dtype=dtype)
    out = torch.empty_like(x)
    fn = ops.rms_norm if impl == "vllm" else torch_native
    benchmark.extra_info["bytes"] = 2 * x.numel() * x.element_size()
    benchmark(fn, out, x, w, 1e-6)
