"""rms_norm / fused_add_rms_norm on CPU against the PyTorch reference, for
every ISA variant, with fresh random inputs and NaN-poisoned outputs."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops

from tests.kernels.isa import cpu_isa  # noqa: F401  (fixture)
from tests.kernels.reference import fused_add_rms_norm_ref, rms_norm_ref

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
HIDDEN = [8, 64, 77, 576, 1000, 4096, 5120 + 3]
TOKENS = [1, 7, 33]


def tolerance(dtype):
    # fp32: within 1e-5 relative; 16-bit: one rounding step of the dtype
    # (summation order differs from torch's).
    return {torch.float32: (1e-5, 1e-6), torch.bfloat16: (1.6e-2, 1e-2),
            torch.float16: (2e-3, 1e-3)}[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("tokens", TOKENS)
def test_rms_norm(cpu_isa, dtype, hidden, tokens):
    x = torch.randn(tokens, hidden, dtype=dtype) * 3
    w = torch.randn(hidden, dtype=dtype)
    out = torch.full_like(x, float("nan"))
    ops.rms_norm(out, x, w, 1e-6)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(out, rms_norm_ref(x, w, 1e-6), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_fused_add_rms_norm(cpu_isa, dtype, hidden):
    x = torch.randn(13, hidden, dtype=dtype)
    residual = torch.randn(13, hidden, dtype=dtype)
    w = torch.randn(hidden, dtype=dtype)
    expected_out, expected_residual = fused_add_rms_norm_ref(x, residual, w, 1e-5)
    ops.fused_add_rms_norm(x, residual, w, 1e-5)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(residual, expected_residual, rtol=rtol, atol=atol)
    torch.testing.assert_close(x, expected_out, rtol=rtol, atol=atol)


def test_rms_norm_row_slice_and_3d_input(cpu_isa):
    base = torch.randn(9, 2 * 96)
    x = base[:, :96]  # rows of a wider tensor: stride(0) = 192
    w = torch.randn(96)
    out = torch.full((9, 96), float("nan"))
    ops.rms_norm(out, x, w, 1e-5)
    torch.testing.assert_close(out, rms_norm_ref(x, w, 1e-5), rtol=1e-5, atol=1e-6)
    x3 = torch.randn(2, 5, 96)
    out3 = torch.full_like(x3, float("nan"))
    ops.rms_norm(out3, x3, w, 1e-5)
    torch.testing.assert_close(out3, rms_norm_ref(x3, w, 1e-5), rtol=1e-5, atol=1e-6)


def test_rms_norm_leaves_padding_rows_alone():
    out = torch.full((4, 64), 7.0)
    ops.rms_norm(out[:0], torch.empty(0, 64), torch.ones(64), 1e-5)
    assert torch.all(out == 7.0)


@pytest.mark.parametrize("bad", ["weight_shape", "dtype_mix", "out_shape", "int_dtype"])
def test_rms_norm_rejects_bad_arguments(bad):
    x, w, out = torch.randn(4, 64), torch.randn(64), torch.empty(4, 64)
    if bad == "weight_shape":
        w = torch.randn(63)
    elif bad == "dtype_mix":
        w = w.bfloat16()
    elif bad == "out_shape":
        out = torch.empty(4, 65)
    elif bad == "int_dtype":
        x, w, out = x.int(), w.int(), out.int()
    with pytest.raises(RuntimeError, match="rms_norm"):
        ops.rms_norm(out, x, w, 1e-5)


def test_opcheck_rms_norm():
    x, w = torch.randn(5, 128, dtype=torch.bfloat16), torch.randn(128, dtype=torch.bfloat16)
    torch.library.opcheck(torch.ops._C.rms_norm.default, (torch.empty_like(x), x, w, 1e-5))


def test_opcheck_fused_add_rms_norm():
    x, r, w = torch.randn(5, 128), torch.randn(5, 128), torch.randn(128)
    torch.library.opcheck(torch.ops._C.fused_add_rms_norm.default, (x, r, w, 1e-5))
