"""small_m_linear (the decode-batch linear kernel) on CPU against a float64
reference, for every ISA variant, with fresh random inputs, NaN-poisoned
outputs, odd shapes (tails in k, n not a multiple of 4, 1..16 rows), bias,
and row-strided inputs."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops

from tests.kernels.isa import cpu_isa  # noqa: F401  (fixture)

# fp32 within 1e-5 relative; 16-bit outputs: one rounding of the dtype.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-4), torch.bfloat16: dict(rtol=1.6e-2, atol=2e-2),
       torch.float16: dict(rtol=2e-3, atol=2e-3)}


def reference(x, w, b):
    y = x.double() @ w.double().T
    return (y + b.double() if b is not None else y).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 9, 16])
@pytest.mark.parametrize("n, k", [(960, 576), (97, 33), (5, 100), (1536, 64), (8, 1536), (8200, 40)])
@pytest.mark.parametrize("bias", [False, True])
def test_small_m_linear_matches_reference(cpu_isa, dtype, m, n, k, bias):
    x = torch.randn(m, k).to(dtype)
    w = (torch.randn(n, k) / k ** 0.5).to(dtype)
    b = torch.randn(n).to(dtype) if bias else None
    out = torch.full((m, n), float("nan"), dtype=dtype)
    ops.small_m_linear(out, x, w, b)
    torch.testing.assert_close(out, reference(x, w, b), **TOL[dtype])


def test_row_strided_input_and_output(cpu_isa):
    big = torch.randn(3, 200).to(torch.bfloat16)
    x = big[:, 10:74]  # rows 200 apart
    w = torch.randn(40, 64).to(torch.bfloat16)
    out_big = torch.full((3, 100), float("nan"), dtype=torch.bfloat16)
    out = out_big[:, :40]
    ops.small_m_linear(out, x, w, None)
    torch.testing.assert_close(out, reference(x, w, None), **TOL[torch.bfloat16])
    assert out_big[:, 40:].isnan().all()  # nothing written outside out


def test_bad_shapes_are_errors():
    x, w = torch.randn(2, 8), torch.randn(4, 8)
    with pytest.raises(RuntimeError, match="out must be"):
        ops.small_m_linear(torch.empty(2, 5), x, w, None)
    with pytest.raises(RuntimeError, match="features"):
        ops.small_m_linear(torch.empty(2, 4), x, torch.randn(4, 9), None)
    with pytest.raises(RuntimeError, match="dtype"):
        ops.small_m_linear(torch.empty(2, 4), x, w.to(torch.bfloat16), None)
    with pytest.raises(RuntimeError, match="bias"):
        ops.small_m_linear(torch.empty(2, 4), x, w, torch.randn(5))


def test_opcheck():
    x, w, b = torch.randn(3, 40), torch.randn(24, 40), torch.randn(24)
    torch.library.opcheck(torch.ops._C.small_m_linear.default, (torch.empty(3, 24), x, w, b))


def test_linear_layer_uses_it_for_16_bit_decode_batches():
    from vllm.model_executor.layers.linear import Linear
    layer = Linear(64, {"a": 32, "b": 16}, bias=True, dtype=torch.bfloat16)
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    for rows in (1, 3, 4, 300):  # kernel up to 3 rows, torch above
        x = torch.randn(rows, 64).to(torch.bfloat16)
        torch.testing.assert_close(layer(x), reference(x, layer.weight, layer.bias),
                                   **TOL[torch.bfloat16])


@pytest.mark.parametrize("bias", [False, True])
def test_linear_layer_with_the_packed_onednn_weight(bias):
    from vllm.model_executor.layers import linear
    if not linear._PACKED_ONEDNN:
        pytest.skip("torch has no oneDNN bf16 path on this CPU")
    layer = linear.Linear(576, {"q": 576, "k": 192, "v": 192}, bias=bias, dtype=torch.bfloat16)
    torch.nn.init.normal_(layer.weight)
    if bias:
        torch.nn.init.normal_(layer.bias)
    # where packed_linear runs, pack_weight picks our layout: ask for oneDNN's
    layer.packed_weight = linear.pack_weight_for_onednn(layer.weight)
    assert layer.packed_weight is not None and layer.packed_weight.is_mkldnn
    for rows in (4, 64, 517):  # every row count above the small-row kernel's
        x = torch.randn(rows, 576).to(torch.bfloat16)
        out = layer(x)
        assert out.shape == (rows, 960) and out.dtype == torch.bfloat16
        torch.testing.assert_close(out, reference(x, layer.weight, layer.bias),
                                   **TOL[torch.bfloat16])


def test_fp32_layers_are_not_packed():
    # fp32 stays on F.linear: exact comparisons with transformers rely on it.
    from vllm.model_executor.layers.linear import Linear
    layer = Linear(64, 32, dtype=torch.float32)
    layer.process_weights_after_loading()
    assert layer.packed_weight is None


def test_weights_placed_back_to_back_in_call_order():
    from vllm.model_executor.layers.linear import Linear, place_weights_in_call_order
    layers = [Linear(64, 96, dtype=torch.bfloat16), Linear(96, 32, dtype=torch.bfloat16),
              Linear(32, 64, dtype=torch.bfloat16)]
    for layer in layers:
        torch.nn.init.normal_(layer.weight)
    before = [layer.weight.detach().clone() for layer in layers]
    place_weights_in_call_order(layers)
    for layer, weight in zip(layers, before):
        assert torch.equal(layer.weight, weight) and layer.weight.is_contiguous()
    for first, second in zip(layers, layers[1:]):
        end = first.weight.data_ptr() + first.weight.numel() * first.weight.element_size()
        assert second.weight.data_ptr() == end
    x = torch.randn(2, 64).to(torch.bfloat16)  # and the layers still compute
    torch.testing.assert_close(layers[0](x), reference(x, before[0], None), **TOL[torch.bfloat16])
