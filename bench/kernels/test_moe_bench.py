"""One MoE layer, bf16, hidden 2048: ours (FusedMoE, experts packed at load,
routing by the topk_softmax kernel) against a plain per-expert torch loop
(softmax, topk, then F.linear per expert over its tokens, index_add) and
against transformers' own sparse MoE block (OLMoE's, with the grouped_mm
experts transformers picks by default), on the same weights and router
logits, in one run.

    python -m pytest bench/kernels/test_moe_bench.py --benchmark-only \
        --benchmark-group-by=param:shape,param:m --benchmark-json=moe.json
    python bench/kernels/ratio_table.py moe.json

Shapes: Mixtral-like (E=8, top-2, N=5632), Qwen1.5-MoE-like (E=60, top-4,
N=1408), OLMoE-like (E=64, top-8, N=1024). At M = 1 the yardstick is the
bytes of the k experts routed to (extra_info GB/s) against the machine's
read bandwidth (bench/kernels/bandwidth.py). Not part of the test suite.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vllm.model_executor.layers.fused_moe import FusedMoE

HIDDEN = 2048
SHAPES = {"mixtral": (8, 2, 5632), "qwen_moe": (60, 4, 1408), "olmoe": (64, 8, 1024)}
ROWS = [1, 16, 256, 2048]
IMPLS = ["vllm", "torch_loop", "hf"]

_layers: dict = {}


def _layer(shape: str):
    """(weights, ours, transformers' block) of a shape, built once."""
    if shape not in _layers:
        _layers.clear()  # one shape's copies in memory at a time
        e, k, n = SHAPES[shape]
        torch.manual_seed(0)
        w1 = (torch.randn(e, 2 * n, HIDDEN) * HIDDEN ** -0.5).to(torch.bfloat16)
        w2 = (torch.randn(e, HIDDEN, n) * n ** -0.5).to(torch.bfloat16)
        ours = FusedMoE(e, k, HIDDEN, n, torch.bfloat16, renormalize=False)
        ours.w13_weight.data.copy_(w1)
        ours.w2_weight.data.copy_(w2)
        ours.process_weights_after_loading()
        _layers[shape] = (w1, w2, ours, _hf_block(e, k, n, w1, w2))
    return _layers[shape]


def _hf_block(e, k, n, w1, w2):
    import transformers
    from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock
    config = transformers.OlmoeConfig(hidden_size=HIDDEN, intermediate_size=n, num_experts=e,
                                      num_experts_per_tok=k, norm_topk_prob=False)
    config._experts_implementation = "grouped_mm"
    block = OlmoeSparseMoeBlock(config).to(torch.bfloat16).eval()
    with torch.no_grad():
        block.experts.gate_up_proj.copy_(w1)
        block.experts.down_proj.copy_(w2)
    return block


def torch_loop(x, logits, w1, w2, k):
    weights, ids = logits.float().softmax(-1).topk(k, dim=-1)
    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32)
    n = w2.shape[2]
    for expert in ids.unique().tolist():
        rows, slot = torch.where(ids == expert)
        gate_up = F.linear(x[rows], w1[expert])
        h = F.silu(gate_up[:, :n]) * gate_up[:, n:]
        out.index_add_(0, rows, F.linear(h, w2[expert]).float() * weights[rows, slot, None])
    return out.to(x.dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_moe_layer(benchmark, shape, m, impl):
    w1, w2, ours, hf = _layer(shape)
    e, k, n = SHAPES[shape]
    torch.manual_seed(m)
    x = torch.randn(m, HIDDEN).to(torch.bfloat16)
    logits = torch.randn(m, e).to(torch.bfloat16)
    if impl == "vllm":
        def call():
            return ours(x, logits)
    elif impl == "torch_loop":
        def call():
            return torch_loop(x, logits, w1, w2, k)
    else:
        def call():
            # the block's router, on our logits (its own linear would make
            # others), then its experts
            top, idx = logits.float().softmax(-1).topk(k, dim=-1)
            return hf.experts(x, idx, top.to(x.dtype))
    with torch.no_grad():
        routed = len(torch.topk(logits.float(), k, dim=-1).indices.unique())
        benchmark.extra_info["bytes"] = routed * 3 * n * HIDDEN * 2
        rounds = 20 if m <= 16 else (5 if m <= 256 else 2)
        benchmark.pedantic(call, rounds=rounds, warmup_rounds=1)
        seconds = benchmark.stats.stats.median
        benchmark.extra_info["GB/s"] = benchmark.extra_info["bytes"] / seconds / 1e9

