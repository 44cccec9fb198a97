"""packed_linear_gated (a gated MLP's gate/up projection and its activation
in one pass; AVX512-BF16 and AVX2 kernels, each test on every variant this
CPU runs) against an independent float64/torch reference
with fresh random inputs and NaN-poisoned outputs, and bit for bit against
the two ops it replaces (packed_linear, then the *_and_mul kernel); row
counts around the 8-row micro-kernel and the 128-row chunk, bias, strided
rows; the interleaved packing against its definition; the layer's plain
forward on that packing; the MLP's use of it and its fallback; bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vllm import _custom_ops as ops
from vllm.model_executor.layers import linear
from vllm.model_executor.layers.activation import ActAndMul, gate_up_activation

from tests.kernels.isa import active_isa, packed_isa, without_packed_linear  # noqa: F401

# every test runs once per kernel variant with packed_linear (the fixture skips
# where there is none)
pytestmark = pytest.mark.usefixtures("packed_isa")

TORCH_ACT = {"silu": F.silu, "gelu": F.gelu,
             "gelu_pytorch_tanh": lambda t: F.gelu(t, approximate="tanh")}
TWO_OPS = {"silu": ops.silu_and_mul, "gelu": ops.gelu_and_mul,
           "gelu_pytorch_tanh": ops.gelu_tanh_and_mul}


def reference(x, w, b, act):
    """Float64 GEMM, then the roundings of the unfused model: gate and up to
    bf16, act(gate) to bf16, the product to bf16."""
    y = x.double() @ w.double().T
    y = (y + b.double() if b is not None else y).to(torch.bfloat16)
    gate, up = y.chunk(2, dim=-1)
    return (TORCH_ACT[act](gate.float()).to(torch.bfloat16).float() * up.float()).to(torch.bfloat16)


def random_case(m, d, k, bias):
    x = torch.randn(m, k).to(torch.bfloat16)
    w = (torch.randn(2 * d, k) * (2 / k) ** 0.5).to(torch.bfloat16)
    b = torch.randn(2 * d).to(torch.bfloat16) if bias else None
    return x, w, b


def gated(x, packed, b, act, d):
    out = torch.full((x.shape[0], d), float("nan"), dtype=torch.bfloat16)
    ops.packed_linear_gated(out, x, packed, b, act)
    return out


def two_ops(x, w, b, act, d):
    gate_up = torch.full((x.shape[0], 2 * d), float("nan"), dtype=torch.bfloat16)
    ops.packed_linear(gate_up, x, linear.pack_weight_pairs(w), b)
    out = torch.full((x.shape[0], d), float("nan"), dtype=torch.bfloat16)
    TWO_OPS[act](out, gate_up)
    return out


@pytest.mark.parametrize("m", [1, 3, 6, 8, 9, 64, 65, 130, 300])
# d: whole panels, and widths whose last panel is partly padding (40, 1000)
@pytest.mark.parametrize("d, k", [(48, 64), (96, 34), (1536, 576), (240, 130), (40, 64),
                                  (1000, 66)])
@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_pytorch_tanh"])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_reference_and_the_two_ops(m, d, k, act, bias):
    x, w, b = random_case(m, d, k, bias)
    out = gated(x, linear.pack_gate_up_pairs(w), b, act, d)
    # Our GEMM sums in another order than float64: a gate or up value may
    # round to the neighbouring bf16, i.e. a few bf16 ulps after the product.
    torch.testing.assert_close(out, reference(x, w, b, act), rtol=3e-2, atol=3e-2)
    assert torch.equal(out, two_ops(x, w, b, act, d))


def test_strided_rows_and_nothing_written_outside():
    d, k = 96, 128
    x_big = torch.randn(20, 300).to(torch.bfloat16)
    x = x_big[:, 10:10 + k]  # rows 300 apart
    _, w, b = random_case(1, d, k, True)
    out_big = torch.full((20, 120), float("nan"), dtype=torch.bfloat16)
    out = out_big[:, 7:7 + d]
    ops.packed_linear_gated(out, x, linear.pack_gate_up_pairs(w), b, "silu")
    assert torch.equal(out, two_ops(x.contiguous(), w, b, "silu", d))
    assert out_big[:, :7].isnan().all() and out_big[:, 7 + d:].isnan().all()


def test_packing_matches_its_definition():
    d, k = 96, 10
    w = torch.randn(2 * d, k).to(torch.bfloat16)
    packed = linear.pack_gate_up_pairs(w)
    assert packed.shape == (2, 2, 5, 48, 2) and packed.is_contiguous()
    for j in range(2):
        for half in range(2):
            for kp in range(5):
                for c in range(48):
                    for t in range(2):
                        assert packed[j, half, kp, c, t] == w[half * d + 48 * j + c, 2 * kp + t]


def make_gate_up_layer(hidden, inter, bias):
    layer = linear.Linear(hidden, {"gate": inter, "up": inter}, bias=bias,
                          dtype=torch.bfloat16, gate_up=True)
    torch.nn.init.normal_(layer.weight, std=hidden ** -0.5)
    if bias:
        torch.nn.init.normal_(layer.bias)
    layer.process_weights_after_loading()
    return layer


@pytest.mark.parametrize("bias", [False, True])
def test_layer_forward_on_the_interleaved_packing(bias):
    # A caller that wants gate and up themselves still gets them, in order.
    layer = make_gate_up_layer(64, 96, bias)
    assert layer.packed_weight.shape == (2, 2, 32, 48, 2)
    for rows in (1, 9, 130):
        x = torch.randn(rows, 64).to(torch.bfloat16)
        plain = torch.full((rows, 192), float("nan"), dtype=torch.bfloat16)
        ops.packed_linear(plain, x, linear.pack_weight_pairs(layer.weight), layer.bias)
        assert torch.equal(layer(x), plain)


@pytest.mark.parametrize("act", ["silu", "gelu_pytorch_tanh"])
@pytest.mark.parametrize("bias", [False, True])
def test_mlp_uses_it_and_falls_back_without_it(act, bias):
    hidden, inter = 576, 1536
    layer = make_gate_up_layer(hidden, inter, bias)
    act_mod = ActAndMul(act)
    xs = [torch.randn(rows, hidden).to(torch.bfloat16) for rows in (1, 5, 64, 200)]
    for x in xs:
        fused = gate_up_activation(x, layer, act_mod)
        assert torch.equal(fused, gated(x, layer.packed_weight, layer.bias, act, inter))
        assert torch.equal(fused, two_ops(x, layer.weight, layer.bias, act, inter))
    plain_isa = without_packed_linear()
    if plain_isa is None:
        return
    with active_isa(plain_isa):  # a variant without it (scalar): projection, then the activation
        for x in xs:
            torch.testing.assert_close(gate_up_activation(x, layer, act_mod),
                                       reference(x, layer.weight, layer.bias, act),
                                       rtol=3e-2, atol=3e-2)
        with pytest.raises(RuntimeError, match="needs the AVX512-BF16 or AVX2 CPU kernels"):
            gated(xs[0], layer.packed_weight, None, act, inter)


@pytest.mark.parametrize("bias", [False, True])
def test_width_not_a_multiple_of_the_panel_is_padded(bias):
    """d = 40: one gate/up panel pair, columns 40-47 zero weights; the fused
    op, the layer's plain forward and the two ops all agree."""
    layer = make_gate_up_layer(64, 40, bias)
    assert tuple(layer.packed_weight.shape) == (1, 2, 32, 48, 2)
    assert not layer.packed_weight[:, :, :, 40:].any()
    x = torch.randn(9, 64).to(torch.bfloat16)
    act_mod = ActAndMul("silu")
    fused = gate_up_activation(x, layer, act_mod)
    assert torch.equal(fused, act_mod(layer(x)))
    torch.testing.assert_close(layer(x), F.linear(x.float(), layer.weight.float(),
                                                  None if layer.bias is None
                                                  else layer.bias.float()).to(torch.bfloat16),
                               rtol=2e-2, atol=2e-2)


def test_bad_input_is_an_error():
    x, w, _ = random_case(4, 48, 64, False)
    packed = linear.pack_gate_up_pairs(w)
    out = torch.empty(4, 48, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="activation 'relu' is not one of"):
        ops.packed_linear_gated(out, x, packed, None, "relu")
    with pytest.raises(RuntimeError, match=r"must be a contiguous \[2, 2, 32, 48, 2\] tensor"):
        ops.packed_linear_gated(torch.empty(4, 96, dtype=torch.bfloat16), x, packed, None, "silu")
    with pytest.raises(RuntimeError, match="gate and up panels interleaved"):
        ops.packed_linear_gated(out, x, linear.pack_weight_pairs(w), None, "silu")
    with pytest.raises(RuntimeError, match=r"contiguous \[1, 2, 33, 48, 2\] tensor .* for d=48, k=66"):
        ops.packed_linear_gated(out, torch.randn(4, 66).to(torch.bfloat16), packed, None, "silu")
    with pytest.raises(RuntimeError, match="k must be even"):
        ops.packed_linear_gated(out, torch.randn(4, 65).to(torch.bfloat16),
                                linear.pack_gate_up_pairs(torch.randn(96, 64).to(torch.bfloat16)),
                                None, "silu")
    with pytest.raises(RuntimeError, match="bias must be a contiguous"):
        ops.packed_linear_gated(out, x, packed, torch.zeros(48, dtype=torch.bfloat16), "silu")
    with pytest.raises(RuntimeError, match="out has 3 rows"):
        ops.packed_linear_gated(out[:3], x, packed, None, "silu")
    with pytest.raises(RuntimeError, match="bf16 only"):
        ops.packed_linear_gated(out.float(), x.float(), packed.float(), None, "silu")
    with pytest.raises(ValueError, match="two equal shards"):
        linear.Linear(64, {"gate": 48, "up": 96}, gate_up=True)


def test_opcheck():
    x, w, b = random_case(5, 48, 40, True)
    torch.library.opcheck(torch.ops._C.packed_linear_gated.default,
                          (torch.empty(5, 48, dtype=torch.bfloat16), x,
                           linear.pack_gate_up_pairs(w), b, "silu"))
