"""Gated and plain SiLU/GELU kernels against float64 references, per ISA."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops

from tests.kernels.isa import cpu_isa  # noqa: F401  (fixture)
from tests.kernels.reference import act_and_mul_ref, activation_ref

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
GATED = {"silu": ops.silu_and_mul, "gelu": ops.gelu_and_mul,
         "gelu_tanh": ops.gelu_tanh_and_mul}
PLAIN = {"gelu_new": ops.gelu_new, "gelu_fast": ops.gelu_fast, "gelu_quick": ops.gelu_quick}
# fp32: 1e-5 relative (atol covers results below 1e-6, e.g. far GELU tails);
# 16-bit: one rounding of the dtype (the kernel may round a tie the other way).
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6),
       torch.bfloat16: dict(rtol=1.6e-2, atol=1e-3),
       torch.float16: dict(rtol=2e-3, atol=1e-4)}


@pytest.mark.parametrize("kind", sorted(GATED))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1536), (7, 77), (3, 5, 64), (33, 2816)])
def test_act_and_mul(cpu_isa, kind, dtype, shape):
    d = shape[-1]
    x = torch.randn(*shape[:-1], 2 * d, dtype=dtype) * 4
    out = torch.full((*shape[:-1], d), float("nan"), dtype=dtype)
    GATED[kind](out, x)
    torch.testing.assert_close(out, act_and_mul_ref(kind, x), **TOL[dtype])


@pytest.mark.parametrize("kind", sorted(PLAIN))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1000), (9, 77), (2, 3, 64)])
def test_plain_activation(cpu_isa, kind, dtype, shape):
    x = torch.randn(*shape, dtype=dtype) * 4
    out = torch.full_like(x, float("nan"))
    PLAIN[kind](out, x)
    torch.testing.assert_close(out, activation_ref(kind, x), **TOL[dtype])


def test_extreme_inputs_stay_finite(cpu_isa):
    x = torch.tensor([[-200.0, -90.0, -30.0, 0.0, 30.0, 90.0, 200.0, 1e-30]])
    x = torch.cat([x, torch.ones_like(x)], dim=-1)
    out = torch.full((1, 8), float("nan"))
    for fn in GATED.values():
        fn(out, x)
        assert torch.isfinite(out).all(), out
        torch.testing.assert_close(out[0, 4:7], x[0, 4:7], rtol=1e-6, atol=0)


def test_act_and_mul_rejects_odd_width():
    with pytest.raises(RuntimeError, match="must be even"):
        ops.silu_and_mul(torch.empty(2, 3), torch.randn(2, 7))
    with pytest.raises(RuntimeError, match="last dim must be 4"):
        ops.silu_and_mul(torch.empty(2, 3), torch.randn(2, 8))


@pytest.mark.parametrize("name", sorted(GATED) + sorted(PLAIN))
def test_opcheck(name):
    fn = getattr(torch.ops._C, f"{name}_and_mul" if name in GATED else name).default
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    out = torch.empty(4, 32 if name in GATED else 64, dtype=torch.bfloat16)
    torch.library.opcheck(fn, (out, x))
