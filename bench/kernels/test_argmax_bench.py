"""Greedy sampling: our greedy_argmax on the model's 16-bit logits vs what
it replaces (fp32 copy, then torch.argmax), SmolLM2's vocabulary.

    python -m pytest bench/kernels/test_argmax_bench.py --benchmark-only
"""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops

pytestmark = pytest.mark.skipif(not hasattr(torch.ops._C, "greedy_argmax"),
                                reason="CPU build only")

VOCAB = 49152


def torch_native(logits):
    return logits.float().argmax(-1)


@pytest.mark.parametrize("impl", ["vllm", "torch"])
@pytest.mark.parametrize("rows", [1, 16, 64])
def test_greedy_argmax(benchmark, threads, rows, impl):
    logits = (torch.randn(rows, VOCAB) * 5).to(torch.bfloat16)
    fn = ops.greedy_argmax if impl == "vllm" else torch_native
    assert torch.equal(fn(logits), torch_native(logits))
    benchmark(fn, logits)
