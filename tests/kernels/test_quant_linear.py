"""quant_linear (4/8-bit weights, x quantized to int8 per 32-block inside)
on every CPU kernel variant this machine runs, against references written
here from the definitions, with fresh random inputs and NaN-poisoned
outputs:

- the exact arithmetic (kernel_table.h, QuantLinearArgs) in float64: x
  quantized per 32-block, integer dot products per flush block, scaled; the
  kernel's fp32 steps differ from it by rounding only;
- dequantize-then-matmul (the weight's meaning): off by the int8
  quantization of x only;
- the variants give the same bits (same integer sums, same fp32 steps);
- the packing against its byte-level definition, and unpack_columns as its
  inverse; bad input."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers.quantization.packing import (QuantizedWeight, concat_rows,
                                                             pack_quantized, unpack_columns)

from tests.kernels.isa import active_isa, cpu_isa, supported_isas  # noqa: F401

pytestmark = pytest.mark.skipif(not hasattr(torch.ops._C, "quant_linear"),
                                reason="no CPU kernels in this build")


def random_weight(n, k, bits, group, generator=None) -> QuantizedWeight:
    g = torch.Generator().manual_seed(0) if generator is None else generator
    if bits == 4:
        values = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    else:
        values = torch.randint(-128, 128, (n, k), generator=g).to(torch.int8)
    scales = (torch.rand(n, k // group, generator=g) * 0.02 + 0.001).to(torch.float16)
    offsets = ((torch.rand(n, k // group, generator=g) - 0.5) * 0.1).to(torch.float16)
    return QuantizedWeight(values, scales, offsets, bits, group)


def quantize_x(x: torch.Tensor):
    """Per row and 32-block: d = max|x| / 127, q = rint(x * 127 / max|x|)."""
    blocks = x.float().view(x.shape[0], -1, 32)
    amax = blocks.abs().amax(dim=2, keepdim=True)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(blocks * inv)  # round half to even, as rint
    return q.view(x.shape), (amax / 127.0).squeeze(2)


def exact_reference(x, qw: QuantizedWeight, bias=None) -> torch.Tensor:
    """The kernel's arithmetic in float64 (no fp32 roundings)."""
    q, d = quantize_x(x)
    m, k = x.shape
    g = qw.group_size
    flush = min(g, 32)
    qx = q.double().view(m, k // flush, flush)
    w = qw.values.double().view(qw.shape[0], k // flush, flush)
    dots = torch.einsum("mbf,nbf->mnb", qx, w)  # integer sums per flush block
    dx = d.double().repeat_interleave(32 // flush, dim=1) if flush < 32 else d.double()
    scale = qw.scales.double().repeat_interleave(g // flush, dim=1)  # [n, blocks]
    y = (dots * scale.unsqueeze(0) * dx.unsqueeze(1)).sum(2)
    xsum = (qx.sum(2) * dx).view(m, k // g, g // flush).sum(2)  # [m, groups]
    y += xsum @ qw.offsets.double().T
    if bias is not None:
        y += bias.double()
    return y


def run(x, qw, packed, bias=None, int8_max_rows=ops.QUANT_INT8_MAX_ROWS):
    out = torch.full((x.shape[0], qw.shape[0]), float("nan"), dtype=x.dtype)
    ops.quant_linear(out, x, packed, qw.bits, qw.group_size, bias, int8_max_rows)
    return out


CASES = [  # m, n, k, bits, group
    (1, 48, 64, 4, 32), (1, 100, 576, 4, 32), (3, 200, 128, 4, 128), (5, 96, 256, 4, 256),
    (4, 50, 96, 8, 32), (1, 30, 64, 8, 16), (7, 144, 192, 8, 64), (2, 70, 128, 4, 16),
    (9, 49, 64, 4, 64), (33, 97, 160, 8, 32),
]


@pytest.mark.parametrize("m,n,k,bits,group", CASES)
def test_matches_the_exact_arithmetic(cpu_isa, m, n, k, bits, group):
    torch.manual_seed(m * 1000 + n)
    qw = random_weight(n, k, bits, group)
    x = torch.randn(m, k)
    bias = torch.randn(n)
    out = run(x, qw, pack_quantized(qw), bias)
    want = exact_reference(x, qw, bias)
    assert not out.isnan().any()
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_activations(cpu_isa, dtype):
    qw = random_weight(100, 256, 4, 64)
    x = torch.randn(6, 256).to(dtype)
    out = run(x, qw, pack_quantized(qw))
    want = exact_reference(x.float(), qw)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), want, rtol=1e-2, atol=1e-2 * want.abs().max().item())


@pytest.mark.parametrize("bits", [4, 8])
def test_close_to_dequantize_then_matmul(bits):
    # the weight's meaning: the only difference is x's int8 rounding
    qw = random_weight(128, 512, bits, 32)
    x = torch.randn(4, 512)
    out = run(x, qw, pack_quantized(qw)).double()
    want = x.double() @ qw.dequantize(torch.float64).T
    err = (out - want).abs().max() / want.abs().max()
    assert err < 1e-2


@pytest.mark.parametrize("bits", [4, 8])
def test_variants_give_the_same_bits(bits):
    isas = supported_isas()
    if len(isas) < 2:
        pytest.skip("one kernel variant here")
    qw = random_weight(150, 320, bits, 32 if bits == 4 else 16)
    packed = pack_quantized(qw)
    x = torch.randn(11, 320).to(torch.bfloat16)
    results = {}
    for isa in isas:
        with active_isa(isa):
            results[isa] = run(x, qw, packed)
    first = results[isas[0]]
    for isa, out in results.items():
        assert torch.equal(out, first), isa


def test_zero_rows_of_x_give_the_bias():
    qw = random_weight(48, 64, 4, 32)
    x = torch.zeros(2, 64)
    bias = torch.randn(48)
    out = run(x, qw, pack_quantized(qw), bias)
    torch.testing.assert_close(out, bias.expand(2, 48))


@pytest.mark.parametrize("bits", [4, 8])
def test_packing_matches_its_definition(bits):
    n, k, g = 60, 64, 32
    qw = random_weight(n, k, bits, g)
    packed = pack_quantized(qw)
    assert packed.shape == (2, 2, 192 + 48 * g * bits // 8) and packed.dtype == torch.uint8
    step = 8 if bits == 4 else 4
    for col in (0, 17, 47, 48, 59):
        p, c = divmod(col, 48)
        sub, lane = divmod(c, 16)
        for grp in range(k // g):
            head = packed[p, grp, :192].view(torch.float16)
            assert head[c] == qw.scales[col, grp] and head[48 + c] == qw.offsets[col, grp]
            for kk in range(grp * g, (grp + 1) * g):
                s, j = divmod(kk - grp * g, step)
                byte = int(packed[p, grp, 192 + s * 192 + sub * 64 + lane * 4 + j % 4])
                if bits == 4:
                    got = byte & 15 if j < 4 else byte >> 4
                    assert got == int(qw.values[col, kk])
                else:
                    assert byte == int(qw.values[col, kk]) & 0xFF
    # columns past n: zero
    assert not packed[1, :, :192].view(torch.float16).view(-1, 2, 48)[:, :, 12:].any()


@pytest.mark.parametrize("bits", [4, 8])
def test_unpack_columns_inverts_the_packing(bits):
    qw = random_weight(130, 96, bits, 32)
    cols = torch.tensor([0, 5, 47, 48, 129, 64])
    back = unpack_columns(pack_quantized(qw), bits, 32, 96, cols)
    assert torch.equal(back.values, qw.values[cols])
    assert torch.equal(back.scales, qw.scales[cols]) and torch.equal(back.offsets, qw.offsets[cols])


def test_mixed_shards_stack_as_8_bit_with_the_smaller_group():
    a, b = random_weight(20, 64, 4, 32), random_weight(10, 64, 8, 16)
    both = concat_rows([a, b])
    assert both.bits == 8 and both.group_size == 16
    want = torch.cat([a.dequantize(torch.float64), b.dequantize(torch.float64)])
    torch.testing.assert_close(both.dequantize(torch.float64), want, rtol=1e-3, atol=1e-4)


def test_bad_input_is_an_error():
    qw = random_weight(96, 64, 4, 32)
    packed = pack_quantized(qw)
    x, out = torch.randn(2, 64), torch.empty(2, 96)
    with pytest.raises(RuntimeError, match=r"packed weight must be a contiguous uint8 \[2, 2, 960\]"):
        ops.quant_linear(out, x, packed[:, :1], 4, 32, None)
    with pytest.raises(RuntimeError, match="bits must be 4 or 8"):
        ops.quant_linear(out, x, packed, 3, 32, None)
    with pytest.raises(RuntimeError, match="group_size must be 16 or a multiple of 32"):
        ops.quant_linear(out, x, packed, 4, 24, None)
    with pytest.raises(RuntimeError, match="must be a multiple of 32"):
        ops.quant_linear(out, torch.randn(2, 48), packed, 4, 16, None)
    with pytest.raises(RuntimeError, match="bias must be a contiguous"):
        ops.quant_linear(out, x, packed, 4, 32, torch.zeros(95))
    with pytest.raises(ValueError, match="group of 16 or a multiple of 32"):
        pack_quantized(random_weight(8, 48, 4, 48))


def test_opcheck():
    qw = random_weight(60, 64, 8, 32)
    torch.library.opcheck(torch.ops._C.quant_linear.default,
                          (torch.empty(3, 60), torch.randn(3, 64), pack_quantized(qw), 8, 32,
                           None))


@pytest.mark.parametrize("m,n,k,bits,group", [(16, 100, 128, 4, 32), (40, 96, 256, 8, 16),
                                              (300, 50, 64, 4, 64), (17, 144, 96, 8, 32)])
def test_bf16_batches_compute_as_the_dense_bf16_weight(cpu_isa, m, n, k, bits, group):
    # above int8_max_rows rows (0: a step holding a prompt), bf16 x meets the
    # weight expanded to bf16 (no int8 rounding of x): the same bits as
    # packed_linear on a dense bf16 copy
    if not ops.packed_linear_available():
        pytest.skip("no bf16 GEMM in this variant: the int8 path serves every row count")
    from vllm.model_executor.layers.linear import pack_weight_pairs
    qw = random_weight(n, k, bits, group)
    x = torch.randn(m, k).to(torch.bfloat16)
    bias = torch.randn(n).to(torch.bfloat16)
    out = run(x, qw, pack_quantized(qw), bias, int8_max_rows=0)
    dense = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    ops.packed_linear(dense, x, pack_weight_pairs(qw.dequantize(torch.bfloat16)), bias)
    assert torch.equal(out, dense)


def test_steps_with_a_prompt_ask_for_the_dense_bits_at_any_row_count(cpu_isa):
    if not ops.packed_linear_available():
        pytest.skip("no bf16 GEMM in this variant")
    from types import SimpleNamespace

    from vllm.forward_context import set_forward_context
    from vllm.model_executor.layers.linear import (apply_linear, pack_weight_pairs,
                                                   quant_int8_max_rows, shape_only)
    qw = random_weight(96, 128, 4, 32)
    packed = pack_quantized(qw)
    x = torch.randn(2, 128).to(torch.bfloat16)
    dense = torch.empty(2, 96, dtype=torch.bfloat16)
    ops.packed_linear(dense, x, pack_weight_pairs(qw.dequantize(torch.bfloat16)), None)
    weight = shape_only(torch.empty(96, 128, dtype=torch.bfloat16))
    assert quant_int8_max_rows() == ops.QUANT_INT8_MAX_ROWS  # no step: decode's
    with set_forward_context(SimpleNamespace(decode_only=False)):
        assert quant_int8_max_rows() == 0
        assert torch.equal(apply_linear(x, weight, None, packed), dense)
    with set_forward_context(SimpleNamespace(decode_only=True)):
        int8 = apply_linear(x, weight, None, packed)
    assert not torch.equal(int8, dense)  # x rounded to int8
    torch.testing.assert_close(int8.float(), dense.float(), rtol=0.05, atol=0.05)
