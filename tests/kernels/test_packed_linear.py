"""packed_linear (bf16 GEMM on a weight packed in 48-column panels of (k, k+1)
pairs; AVX512-BF16 and AVX2 kernels, each test on every variant this CPU
runs) against a float64 reference with fresh random inputs and NaN-poisoned
outputs: row counts around the 8-row (AVX-512) and 6-row (AVX2)
micro-kernels and the 128/64-row chunks, columns that end mid-vector and mid-panel, bias, strided rows;
the packing against its element-wise definition; the layer's use of it and
its fallback when the active kernel variant lacks it; bad input."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers import linear

from tests.kernels.isa import active_isa, packed_isa, without_packed_linear  # noqa: F401

# every test runs once per kernel variant with packed_linear (the fixture skips
# where there is none)
pytestmark = pytest.mark.usefixtures("packed_isa")

TOL = dict(rtol=1.6e-2, atol=2e-2)  # one bf16 rounding of the output


def reference(x, w, b):
    y = x.double() @ w.double().T
    return (y + b.double() if b is not None else y).to(torch.bfloat16)


def random_case(m, n, k, bias):
    x = torch.randn(m, k).to(torch.bfloat16)
    w = (torch.randn(n, k) / k ** 0.5).to(torch.bfloat16)
    b = torch.randn(n).to(torch.bfloat16) if bias else None
    return x, w, b


@pytest.mark.parametrize("m", [1, 2, 3, 6, 7, 8, 9, 13, 17, 64, 65, 130])
@pytest.mark.parametrize("n, k", [(960, 576), (97, 34), (5, 2), (48, 64), (49, 1536), (200, 130)])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_reference(m, n, k, bias):
    x, w, b = random_case(m, n, k, bias)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    ops.packed_linear(out, x, linear.pack_weight_pairs(w), b)
    torch.testing.assert_close(out, reference(x, w, b), **TOL)


def test_strided_rows_and_nothing_written_past_n():
    x_big = torch.randn(20, 300).to(torch.bfloat16)
    x = x_big[:, 10:138]  # rows 300 apart
    w = (torch.randn(70, 128) / 128 ** 0.5).to(torch.bfloat16)
    out_big = torch.full((20, 100), float("nan"), dtype=torch.bfloat16)
    out = out_big[:, 5:75]
    ops.packed_linear(out, x, linear.pack_weight_pairs(w), None)
    torch.testing.assert_close(out, reference(x, w, None), **TOL)
    assert out_big[:, :5].isnan().all() and out_big[:, 75:].isnan().all()


def test_packing_matches_its_definition():
    n, k = 100, 10
    w = torch.randn(n, k).to(torch.bfloat16)
    packed = linear.pack_weight_pairs(w)
    assert packed.shape == (3, 5, 48, 2) and packed.is_contiguous()
    for p in range(3):
        for kp in range(5):
            for c in range(48):
                for j in range(2):
                    col = p * 48 + c
                    expected = w[col, 2 * kp + j] if col < n else 0.0
                    assert packed[p, kp, c, j] == expected


def test_weights_packed_back_to_back_in_call_order():
    weights = [torch.randn(n, k).to(torch.bfloat16) for n, k in [(96, 64), (50, 96), (64, 50)]]
    packed = linear.pack_weights_in_call_order(weights)
    for w, p in zip(weights, packed):
        assert torch.equal(p, linear.pack_weight_pairs(w))
    for first, second in zip(packed, packed[1:]):
        assert second.data_ptr() == first.data_ptr() + first.numel() * first.element_size()


@pytest.mark.parametrize("bias", [False, True])
def test_layer_uses_it_and_falls_back_without_it(bias):
    layer = linear.Linear(576, {"q": 576, "k": 192, "v": 192}, bias=bias, dtype=torch.bfloat16)
    torch.nn.init.normal_(layer.weight)
    if bias:
        torch.nn.init.normal_(layer.bias)
    layer.process_weights_after_loading()
    assert layer.packed_weight.shape == (20, 288, 48, 2)
    xs = [torch.randn(rows, 576).to(torch.bfloat16) for rows in (1, 5, 64, 300)]
    for x in xs:
        expected = reference(x, layer.weight, layer.bias)
        torch.testing.assert_close(layer(x), expected, **TOL)
        # the same bits as the op itself: the layer took this path
        direct = torch.empty_like(expected)
        ops.packed_linear(direct, x, layer.packed_weight, layer.bias)
        assert torch.equal(layer(x), direct)
    plain_isa = without_packed_linear()
    if plain_isa is None:
        return
    with active_isa(plain_isa):  # a variant without it (scalar): the plain weight serves
        assert not ops.packed_linear_available()
        for x in xs:
            torch.testing.assert_close(layer(x), reference(x, layer.weight, layer.bias), **TOL)
        with pytest.raises(RuntimeError, match="needs the AVX512-BF16 or AVX2 CPU kernels"):
            ops.packed_linear(torch.empty(1, 960, dtype=torch.bfloat16), xs[0],
                              layer.packed_weight, None)


def test_fp32_and_fp16_weights_are_not_pair_packed():
    for dtype in (torch.float32, torch.float16):
        layer = linear.Linear(64, 32, dtype=dtype)
        layer.process_weights_after_loading()
        assert layer.packed_weight is None


def test_bad_input_is_an_error():
    x, w, _ = random_case(4, 96, 64, False)
    packed = linear.pack_weight_pairs(w)
    out = torch.empty(4, 96, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"packed weight must be a contiguous \[2, 32, 48, 2\]"):
        ops.packed_linear(out, x, packed[:, :16], None)
    with pytest.raises(RuntimeError, match="packed weight must be"):
        ops.packed_linear(torch.empty(4, 97, dtype=torch.bfloat16), x, packed, None)
    with pytest.raises(RuntimeError, match="bf16 only"):
        ops.packed_linear(out.float(), x.float(), packed.float(), None)
    with pytest.raises(RuntimeError, match="k must be even"):
        ops.packed_linear(out, torch.randn(4, 63).to(torch.bfloat16), packed, None)
    with pytest.raises(RuntimeError, match="bias must be a contiguous"):
        ops.packed_linear(out, x, packed, torch.zeros(95, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="out has 3 rows"):
        ops.packed_linear(out[:3], x, packed, None)


def test_opcheck():
    x, w, b = random_case(5, 60, 40, True)
    torch.library.opcheck(torch.ops._C.packed_linear.default,
                          (torch.empty(5, 60, dtype=torch.bfloat16), x,
                           linear.pack_weight_pairs(w), b))
