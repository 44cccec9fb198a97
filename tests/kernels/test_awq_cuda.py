"""The AWQ ops on the GPU (csrc/quantization/awq_kernels.cu, and the Triton
kernels compiled for the GPU) against dequantize-then-matmul in PyTorch on
weights packed by the tests' own AWQ packer. Skipped cleanly without a
GPU or without a GPU build."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops

from tests.kernels.gpu import GPU_TESTS
from tests.kernels.test_awq_gptq_ops import _awq, _rel_err

pytestmark = GPU_TESTS


@pytest.mark.parametrize("k,n,group", [(256, 96, 64), (512, 40, 128), (192, 64, 192)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_awq_dequantize_cuda(k, n, group, dtype):
    t, dense = _awq(k, n, group, seed=k + n)
    scales = t["scales"].to(dtype)
    got = ops.awq_dequantize(t["qweight"].cuda(), scales.cuda(), t["qzeros"].cuda(), 0, 0, 0)
    # (q - z) is a small integer: the product rounds once, as the reference's
    want = ((dense.T / t["scales"].float().repeat_interleave(group, 0))
            .round() * scales.float().repeat_interleave(group, 0)).to(dtype)
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)


@pytest.mark.parametrize("m", [1, 5, 16, 37, 300])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_awq_gemm_cuda(m, dtype):
    t, dense = _awq(512, 200 - 200 % 8, 128, seed=m)
    x = torch.randn(m, 512).to(dtype)
    scales = t["scales"].to(dtype)
    got = ops.awq_gemm(x.cuda(), t["qweight"].cuda(), scales.cuda(), t["qzeros"].cuda(), 8)
    assert got.dtype == dtype and got.shape == (m, dense.shape[0])
    w = ops.awq_dequantize(t["qweight"], scales, t["qzeros"]).double()  # CPU, exact
    want = x.double() @ w
    assert _rel_err(got.cpu(), want) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("m", [1, 33])
def test_triton_awq_gemm_cuda(m, monkeypatch):
    monkeypatch.setenv("VLLM_USE_TRITON_AWQ", "1")
    t, dense = _awq(256, 96, 64, seed=m)
    x = torch.randn(m, 256).half()
    got = ops.awq_gemm(x.cuda(), t["qweight"].cuda(), t["scales"].cuda(), t["qzeros"].cuda(), 2)
    assert _rel_err(got.cpu(), x.double() @ dense.T.double()) < 1e-2
