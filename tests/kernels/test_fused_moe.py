"""fused_experts / fused_moe / the FusedMoE layer against a plain per-token
float64 loop over the chosen experts (with the model's bf16 roundings for
bf16), fresh random inputs and NaN-poisoned outputs: many E / top-k / M / N
/ K, M = 1, experts that receive no token, renormalised and not; the
layer's packed-weight path on every CPU kernel variant that has one;
expert_map, weights applied on the input, chunking; bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vllm import _custom_ops as ops
from vllm.model_executor.layers.fused_moe import (FusedMoE, fused_experts, fused_moe,
                                                  fused_topk)

from tests.kernels.isa import packed_isa  # noqa: F401

pytestmark = pytest.mark.skipif(ops._C is None, reason="no compiled kernels")

ACTS = {"silu": F.silu, "gelu": F.gelu}


def reference(x, w1, w2, weights, ids, act="silu", round_to=None):
    """sum_j weights[t, j] * expert_ids[t, j](x[t]) in float64; `round_to`
    rounds where a bf16 model rounds (gate/up, act(gate), their product,
    the expert's output)."""
    def r(t):
        return t.to(round_to).double() if round_to is not None else t
    out = torch.zeros(x.shape[0], w2.shape[1], dtype=torch.float64)
    n = w2.shape[2]
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            gate_up = r(x[t].double() @ w1[e].double().T)
            h = r(r(ACTS[act](gate_up[:n])) * gate_up[n:])
            out[t] += float(weights[t, j]) * r(h @ w2[e].double().T)
    return out


def random_moe(e, n, k, dtype, seed=None):
    w1 = (torch.randn(e, 2 * n, k) * k ** -0.5).to(dtype)
    w2 = (torch.randn(e, k, n) * n ** -0.5).to(dtype)
    return w1, w2


def routing(m, e, topk, renormalize=True):
    gating = torch.randn(m, e) * 2
    weights, ids, _ = fused_topk(torch.empty(m, 1), gating, topk, renormalize)
    return gating, weights, ids


TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}

CASES = [  # (E, top-k, M, N, K): Mixtral-like, Qwen-MoE / OLMoE-like, tiny
    (8, 2, 1, 96, 64), (8, 2, 37, 96, 64), (60, 4, 1, 48, 128), (60, 4, 16, 48, 128),
    (64, 8, 5, 32, 64), (4, 1, 9, 16, 32), (16, 6, 100, 144, 96),
]


@pytest.mark.parametrize("e,topk,m,n,k", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_experts_matches_reference(e, topk, m, n, k, dtype):
    x = torch.randn(m, k).to(dtype)
    w1, w2 = random_moe(e, n, k, dtype)
    _, weights, ids = routing(m, e, topk)
    out = fused_experts(x, w1, w2, weights, ids)
    expected = reference(x, w1, w2, weights, ids, round_to=None if dtype == torch.float32
                         else dtype)
    assert out.dtype == dtype and out.shape == (m, k)
    torch.testing.assert_close(out.double(), expected, **TOL[dtype])


@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_fused_moe_routes_and_computes(renormalize, act):
    e, topk, m, n, k = 12, 3, 21, 64, 48
    x = torch.randn(m, k)
    w1, w2 = random_moe(e, n, k, torch.float32)
    gating = torch.randn(m, e) * 2
    out = fused_moe(x, w1, w2, gating, topk, renormalize, activation=act)
    weights, ids = gating.softmax(-1).topk(topk, dim=-1)
    if renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    torch.testing.assert_close(out.double(), reference(x, w1, w2, weights, ids, act),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("e,topk,m,n,k", CASES)
def test_layer_packed_experts_match_reference(packed_isa, e, topk, m, n, k):
    """bf16 FusedMoE on a CPU with packed_linear: experts packed at load
    (gate/up interleaved where N is a multiple of 48)."""
    layer = FusedMoE(e, topk, k, n, torch.bfloat16, renormalize=False)
    w1, w2 = random_moe(e, n, k, torch.bfloat16)
    layer.w13_weight.data.copy_(w1)
    layer.w2_weight.data.copy_(w2)
    layer.process_weights_after_loading()
    assert layer.w13_packed.shape[:2] == (e, -(-n // 48)) and layer.w2_packed.shape[0] == e
    x = torch.randn(m, k).to(torch.bfloat16)
    gating = torch.randn(m, e).to(torch.bfloat16)
    out = layer(x, gating)
    weights, ids, _ = fused_topk(x, gating, topk, False)
    expected = reference(x, w1, w2, weights, ids, round_to=torch.bfloat16)
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)
    # the one-call kernel and the grouped Python pass over the same packed
    # weights: the same kernels and roundings, each token summed in expert
    # order (only the fp32 multiply-add may contract differently)
    grouped = fused_experts(x, w1, w2, weights, ids, w1_packed=layer.w13_packed,
                            w2_packed=layer.w2_packed)
    torch.testing.assert_close(out, grouped, rtol=8e-3, atol=1e-6)


def test_one_call_kernel_is_what_the_layer_runs(packed_isa, monkeypatch):
    layer = FusedMoE(6, 2, 64, 40, torch.bfloat16)
    layer.w13_weight.data.copy_(random_moe(6, 40, 64, torch.bfloat16)[0])
    layer.w2_weight.data.copy_(random_moe(6, 40, 64, torch.bfloat16)[1])
    layer.process_weights_after_loading()
    calls = []
    original = ops.packed_moe_experts
    monkeypatch.setattr(ops, "packed_moe_experts", lambda *a: calls.append(1) or original(*a))
    layer(torch.randn(3, 64).to(torch.bfloat16), torch.randn(3, 6).to(torch.bfloat16))
    assert calls == [1]


def test_one_call_kernel_rejects_bad_input(packed_isa):
    layer = FusedMoE(4, 2, 64, 48, torch.bfloat16)
    layer.w13_weight.data.normal_()
    layer.w2_weight.data.normal_()
    layer.process_weights_after_loading()
    x = torch.randn(3, 64).to(torch.bfloat16)
    out = torch.empty_like(x)
    w, ids = torch.rand(3, 2), torch.tensor([[0, 1], [2, 3], [1, 4]], dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"topk_ids holds expert 4 outside \[0, 4\)"):
        ops.packed_moe_experts(out, x, layer.w13_packed, layer.w2_packed, w, ids, "silu")
    ids = ids.clamp(max=3)
    with pytest.raises(RuntimeError, match=r"w13_packed must be \[4, 1, 2, 32, 48, 2\]"):
        ops.packed_moe_experts(out, x, layer.w13_packed[:, :, :, :16].contiguous(),
                               layer.w2_packed, w, ids, "silu")
    with pytest.raises(RuntimeError, match="bf16 only"):
        ops.packed_moe_experts(out.float(), x.float(), layer.w13_packed, layer.w2_packed, w,
                               ids, "silu")
    with pytest.raises(RuntimeError, match="activation 'relu' is not one of"):
        ops.packed_moe_experts(out, x, layer.w13_packed, layer.w2_packed, w, ids, "relu")
    with pytest.raises(RuntimeError, match="topk_ids must be contiguous int32"):
        ops.packed_moe_experts(out, x, layer.w13_packed, layer.w2_packed, w, ids.long(), "silu")
    torch.library.opcheck(torch.ops._C.packed_moe_experts,
                          (out, x, layer.w13_packed, layer.w2_packed, w, ids, "silu"))


def test_experts_without_tokens_are_not_read():
    """An expert no token chose may hold anything (NaN): it is never run."""
    e, n, k = 8, 32, 32
    w1, w2 = random_moe(e, n, k, torch.float32)
    w1[5:] = float("nan")
    w2[5:] = float("nan")
    x = torch.randn(4, k)
    ids = torch.tensor([[0, 1], [2, 1], [4, 3], [0, 4]], dtype=torch.int32)
    weights = torch.rand(4, 2)
    out = fused_experts(x, w1, w2, weights, ids)
    torch.testing.assert_close(out.double(), reference(x, w1, w2, weights, ids),
                               rtol=1e-5, atol=1e-5)


def test_expert_map_keeps_only_local_experts():
    e_global, n, k = 6, 32, 16
    w1, w2 = random_moe(e_global, n, k, torch.float32)
    local = [1, 4, 5]  # this rank's experts
    expert_map = torch.full((e_global,), -1, dtype=torch.int32)
    expert_map[local] = torch.arange(len(local), dtype=torch.int32)
    x = torch.randn(10, k)
    _, weights, ids = routing(10, e_global, 2)
    out = fused_experts(x, w1[local], w2[local], weights, ids, global_num_experts=e_global,
                        expert_map=expert_map)
    kept = torch.tensor([[float(int(i) in local) for i in row] for row in ids])
    expected = reference(x, w1, w2, weights * kept, ids)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_router_weight_on_input():
    e, n, k = 4, 16, 16
    w1, w2 = random_moe(e, n, k, torch.float32)
    x = torch.randn(7, k)
    _, weights, ids = routing(7, e, 1, renormalize=False)
    out = fused_experts(x, w1, w2, weights, ids, apply_router_weight_on_input=True)
    expected = reference(x * weights, w1, w2, torch.ones_like(weights), ids)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_layer_router_weight_on_input_runs_the_one_call_kernel(packed_isa, monkeypatch):
    """Top-1 with the weight on the input (vLLM allows no other top-k): the
    input scaled, then the packed experts in one call."""
    e, n, k = 5, 48, 64
    layer = FusedMoE(e, 1, k, n, torch.bfloat16, renormalize=False,
                     apply_router_weight_on_input=True)
    w1, w2 = random_moe(e, n, k, torch.bfloat16)
    layer.w13_weight.data.copy_(w1)
    layer.w2_weight.data.copy_(w2)
    layer.process_weights_after_loading()
    calls = []
    original = ops.packed_moe_experts
    monkeypatch.setattr(ops, "packed_moe_experts", lambda *a: calls.append(1) or original(*a))
    x, gating = torch.randn(11, k).to(torch.bfloat16), torch.randn(11, e).to(torch.bfloat16)
    out = layer(x, gating)
    assert calls == [1]
    weights, ids, _ = fused_topk(x, gating, 1, False)
    scaled = (x * weights).to(torch.bfloat16)
    expected = reference(scaled, w1, w2, torch.ones_like(weights), ids, round_to=torch.bfloat16)
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match="apply_router_weight_on_input needs top-k 1, got 2"):
        FusedMoE(e, 2, k, n, torch.bfloat16, apply_router_weight_on_input=True)


def test_chunks_give_the_same_result(monkeypatch):
    e, n, k = 8, 32, 32
    w1, w2 = random_moe(e, n, k, torch.float32)
    x = torch.randn(23, k)
    _, weights, ids = routing(23, e, 2)
    whole = fused_experts(x, w1, w2, weights, ids)
    from vllm.model_executor.layers.fused_moe import experts
    sizes = []
    original = experts.grouped_expert_pass

    def recording(x, *args, **kwargs):
        sizes.append(x.shape[0])
        return original(x, *args, **kwargs)
    monkeypatch.setattr(experts, "grouped_expert_pass", recording)
    monkeypatch.setenv("VLLM_FUSED_MOE_CHUNK_SIZE", "5")
    chunked = fused_experts(x, w1, w2, weights, ids)
    assert sizes == [5, 5, 5, 5, 3]
    # fewer rows per GEMM: fp32 sums may round differently, nothing more
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_inplace_writes_hidden_states():
    w1, w2 = random_moe(4, 16, 16, torch.float32)
    x = torch.randn(3, 16)
    _, weights, ids = routing(3, 4, 2)
    expected = fused_experts(x.clone(), w1, w2, weights, ids)
    out = fused_experts(x, w1, w2, weights, ids, inplace=True)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(x, expected, rtol=0, atol=0)


def test_bad_input_is_named():
    w1, w2 = random_moe(8, 32, 64, torch.float32)
    x = torch.randn(3, 64)
    _, weights, ids = routing(3, 8, 2)
    with pytest.raises(ValueError, match=r"so w2 must be \[8, 64, 32\]; got w2 \(8, 64, 30\)"):
        fused_experts(x, w1, w2[..., :30], weights, ids)
    with pytest.raises(ValueError, match="hidden_states have 60 features"):
        fused_experts(x[:, :60], w1, w2, weights, ids)
    with pytest.raises(ValueError, match=r"top-k 9 must lie in \[1, 8\]"):
        fused_moe(x, w1, w2, torch.randn(3, 8), 9, True)
    with pytest.raises(ValueError, match=r"top-k 9 must lie in \[1, 8\]"):
        FusedMoE(8, 9, 64, 32, torch.float32)
    with pytest.raises(ValueError, match="topk_ids must lie in"):
        fused_experts(x, w1, w2, weights, ids + 7)
    with pytest.raises(ValueError, match="MoE activation 'relu2'"):
        FusedMoE(8, 2, 64, 32, torch.float32, activation="relu2")


def test_layer_loading():
    layer = FusedMoE(3, 2, 16, 8, torch.float32, prefix="model.layers.0.mlp.experts")
    w1, w2 = random_moe(3, 8, 16, torch.float32)
    mapping = FusedMoE.make_expert_params_mapping("gate_proj", "down_proj", "up_proj", 3)
    assert ("experts.w13_", "experts.1.up_proj.", 1, "w3") in mapping
    assert ("experts.w2_", "experts.2.down_proj.", 2, "w2") in mapping
    for e in range(3):
        layer.weight_loader(layer.w13_weight, w1[e, :8], "gate_proj", "w1", e)
        layer.weight_loader(layer.w13_weight, w1[e, 8:], "up_proj", "w3", e)
        if e != 1:
            layer.weight_loader(layer.w2_weight, w2[e], "down_proj", "w2", e)
    assert not layer.all_loaded()
    assert layer.missing_checkpoint_tensors("model.layers.0.mlp.experts") == [
        "model.layers.0.mlp.experts.1.w2.weight"]
    layer.load_expert(1, "w2", w2[1])
    assert layer.all_loaded()
    torch.testing.assert_close(layer.w13_weight.data, w1, rtol=0, atol=0)
    torch.testing.assert_close(layer.w2_weight.data, w2, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"down_proj has shape \(8, 16\), expected \(16, 8\)"):
        layer.load_expert(0, "w2", w2[0].T.contiguous(), "down_proj")


def test_packed_experts_are_the_only_copy(packed_isa):
    """After packing, the plain expert weights are freed; they unpack again
    exactly, and a kernel variant without packed GEMMs (scalar) still runs
    the layer from them."""
    from tests.kernels.isa import active_isa, without_packed_linear
    e, topk, m, n, k = 6, 2, 9, 40, 64
    layer = FusedMoE(e, topk, k, n, torch.bfloat16, renormalize=False)
    w1, w2 = random_moe(e, n, k, torch.bfloat16)
    layer.w13_weight.data.copy_(w1)
    layer.w2_weight.data.copy_(w2)
    layer.process_weights_after_loading()
    assert layer.w13_weight.numel() == 0 and layer.w2_weight.numel() == 0
    plain13, plain2 = layer.plain_weights()
    assert torch.equal(plain13, w1) and torch.equal(plain2, w2)
    x, gating = torch.randn(m, k).to(torch.bfloat16), torch.randn(m, e).to(torch.bfloat16)
    packed_out = layer(x, gating)
    weights, ids, _ = fused_topk(x, gating, topk, False)
    expected = reference(x, w1, w2, weights, ids, round_to=torch.bfloat16)
    scalar = without_packed_linear()
    if scalar is None:
        pytest.skip("no kernel variant without packed GEMMs here")
    with active_isa(scalar):
        out = layer(x, gating)
    for got in (packed_out, out):
        torch.testing.assert_close(got.double(), expected, rtol=2e-2, atol=2e-2)
