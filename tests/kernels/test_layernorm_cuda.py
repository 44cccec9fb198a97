"""The CUDA (or ROCm) layernorm kernels against the same PyTorch reference.
Skipped cleanly on machines without a GPU or without a GPU build."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops

from tests.kernels.gpu import GPU_TESTS
from tests.kernels.reference import fused_add_rms_norm_ref, rms_norm_ref

pytestmark = GPU_TESTS

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1.6e-2, 1e-2),
       torch.float16: (2e-3, 1e-3)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [8, 77, 576, 4096, 8192 + 5])
@pytest.mark.parametrize("tokens", [1, 7, 257])
def test_rms_norm_cuda(dtype, hidden, tokens):
    x = torch.randn(tokens, hidden, dtype=dtype, device="cuda") * 3
    w = torch.randn(hidden, dtype=dtype, device="cuda")
    out = torch.full_like(x, float("nan"))
    ops.rms_norm(out, x, w, 1e-6)
    torch.testing.assert_close(out, rms_norm_ref(x, w, 1e-6), rtol=TOL[dtype][0],
                               atol=TOL[dtype][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [64, 77, 5120])
def test_fused_add_rms_norm_cuda(dtype, hidden):
    x = torch.randn(33, hidden, dtype=dtype, device="cuda")
    residual = torch.randn_like(x)
    w = torch.randn(hidden, dtype=dtype, device="cuda")
    expected_out, expected_residual = fused_add_rms_norm_ref(x, residual, w, 1e-5)
    ops.fused_add_rms_norm(x, residual, w, 1e-5)
    torch.testing.assert_close(residual, expected_residual, rtol=TOL[dtype][0],
                               atol=TOL[dtype][1])
    torch.testing.assert_close(x, expected_out, rtol=TOL[dtype][0], atol=TOL[dtype][1])


def test_rms_norm_cuda_row_slice():
    base = torch.randn(9, 2 * 96, device="cuda")
    x, w = base[:, :96], torch.randn(96, device="cuda")
    out = torch.full((9, 96), float("nan"), device="cuda")
    ops.rms_norm(out, x, w, 1e-5)
    torch.testing.assert_close(out, rms_norm_ref(x, w, 1e-5), rtol=1e-5, atol=1e-5)


def test_opcheck_rms_norm_cuda():
    x = torch.randn(5, 128, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(128, dtype=torch.bfloat16, device="cuda")
    torch.library.opcheck(torch.ops._C.rms_norm.default, (torch.empty_like(x), x, w, 1e-5))
