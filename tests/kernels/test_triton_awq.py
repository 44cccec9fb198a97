"""The Triton AWQ kernels (VLLM_USE_TRITON_AWQ=1) run on CPU by Triton's
interpreter, against dequantize-then-matmul in PyTorch on weights packed
by the tests' own AWQ packer."""
from __future__ import annotations

import os

import pytest
import torch

# Triton decides at @triton.jit time whether to interpret: set the flag
# before the kernel module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from vllm.triton_ops.awq import awq_dequantize_triton, awq_gemm_triton  # noqa: E402

from tests.kernels.test_awq_gptq_ops import _awq, _rel_err  # noqa: E402


@pytest.mark.parametrize("k,n,group", [(128, 64, 32), (256, 96, 64), (192, 40, 192)])
def test_triton_awq_dequantize_is_exact(k, n, group):
    t, dense = _awq(k, n, group, seed=k + n)
    got = awq_dequantize_triton(t["qweight"], t["scales"].clone(), t["qzeros"])
    torch.testing.assert_close(got.float(), dense.T.half().float(), rtol=0, atol=1e-3 * 0.1)


@pytest.mark.parametrize("m,split_k", [(1, 1), (5, 2), (33, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_awq_gemm_matches_dequantize_then_matmul(m, split_k, dtype):
    t, dense = _awq(256, 96, 64, seed=m)
    x = torch.randn(m, 256).to(dtype)
    got = awq_gemm_triton(x, t["qweight"], t["scales"].to(dtype), t["qzeros"], split_k)
    assert got.dtype == dtype and got.shape == (m, 96)
    want = x.double() @ dense.T.double()
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert _rel_err(got, want) < tol


def test_the_env_switch_routes_the_vllm_ops_to_triton(monkeypatch):
    from vllm import _custom_ops as ops
    from vllm.triton_ops import awq as triton_awq
    calls = []
    original = triton_awq.awq_gemm_triton
    monkeypatch.setattr(triton_awq, "awq_gemm_triton",
                        lambda *a, **kw: calls.append(1) or original(*a, **kw))
    monkeypatch.setenv("VLLM_USE_TRITON_AWQ", "1")
    t, dense = _awq(128, 32, 32)
    x = torch.randn(2, 128)
    got = ops.awq_gemm(x, t["qweight"], t["scales"].float(), t["qzeros"], 1)
    assert calls == [1]
    assert _rel_err(got, x.double() @ dense.T.double()) < 1e-5
