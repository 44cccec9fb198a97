"""The MoE routing ops (torch.ops._moe_C: topk_softmax, moe_align_block_size,
moe_sum) and the routing functions over them (fused_topk, grouped_topk)
against plain PyTorch references with fresh random inputs and poisoned
outputs; opcheck of each op; bad input gets an error naming the problem."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers.fused_moe import fused_topk, grouped_topk, moe_align_block_size

pytestmark = pytest.mark.skipif(ops._C is None, reason="no compiled kernels")


def _topk_outputs(m, k, id_dtype=torch.int32):
    return (torch.full((m, k), float("nan")), torch.full((m, k), -7, dtype=id_dtype),
            torch.full((m, k), -7, dtype=torch.int32))


@pytest.mark.parametrize("m", [1, 7, 130])
@pytest.mark.parametrize("e,k", [(8, 2), (60, 4), (64, 8), (3, 3), (256, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
def test_topk_softmax_matches_torch(m, e, k, dtype, id_dtype):
    gating = torch.randn(m, e).to(dtype) * 3
    weights, ids, token_expert = _topk_outputs(m, k, id_dtype)
    ops.topk_softmax(weights, ids, token_expert, gating)
    # a stable descending sort: equal weights (frequent from 16-bit logits)
    # in expert order, the kernel's tie rule
    probs = gating.float().softmax(-1)
    expected_w, expected_ids = probs.sort(dim=-1, descending=True, stable=True)
    expected_w, expected_ids = expected_w[:, :k], expected_ids[:, :k]
    # fp32 softmax sums in another order than torch's: last-bit differences
    torch.testing.assert_close(weights, expected_w, rtol=1e-5, atol=1e-7)
    # ...which may swap two experts whose probabilities differ by no more
    mismatch = ids.long() != expected_ids
    torch.testing.assert_close(probs.gather(1, ids.long())[mismatch], expected_w[mismatch],
                               rtol=1e-5, atol=1e-7)
    assert mismatch.sum() <= 2
    rows = torch.arange(m).unsqueeze(1)
    assert torch.equal(token_expert, (torch.arange(k).unsqueeze(0) * m + rows).int())


def test_topk_softmax_ties_go_to_the_lower_expert():
    gating = torch.tensor([[1.0, 2.0, 2.0, 0.5, 2.0]])
    weights, ids, token_expert = _topk_outputs(1, 3)
    ops.topk_softmax(weights, ids, token_expert, gating)
    assert ids.tolist() == [[1, 2, 4]]


def test_topk_softmax_strided_rows():
    gating = torch.randn(9, 24)[:, :16]
    weights, ids, token_expert = _topk_outputs(9, 2)
    ops.topk_softmax(weights, ids, token_expert, gating)
    expected_w, expected_ids = gating.softmax(-1).topk(2, dim=-1)
    torch.testing.assert_close(weights, expected_w)
    assert torch.equal(ids.long(), expected_ids)


def test_topk_softmax_rejects_bad_input():
    weights, ids, token_expert = _topk_outputs(4, 9)
    with pytest.raises(RuntimeError, match=r"k \(9\) must lie in \[1, 8\]"):
        ops.topk_softmax(weights, ids, token_expert, torch.randn(4, 8))
    weights, ids, token_expert = _topk_outputs(4, 2)
    with pytest.raises(RuntimeError, match="topk_ids must be int32 or int64"):
        ops.topk_softmax(weights, ids.float(), token_expert, torch.randn(4, 8))
    with pytest.raises(RuntimeError, match="must be \\[5, k\\], got \\[4, 2\\]"):
        ops.topk_softmax(weights, ids, token_expert, torch.randn(5, 8))


def _align_reference(topk_ids, num_experts, block_size):
    """Per expert, its flat choice indices in order, padded to whole blocks."""
    flat = topk_ids.flatten().tolist()
    sorted_ids, experts = [], []
    for e in range(num_experts):
        run = [i for i, x in enumerate(flat) if x == e]
        pad = -len(run) % block_size
        sorted_ids += run + [len(flat)] * pad
        experts += [e] * ((len(run) + pad) // block_size)
    return sorted_ids, experts


@pytest.mark.parametrize("m,k,e,block", [(1, 2, 8, 16), (33, 2, 8, 16), (200, 4, 60, 64),
                                         (17, 8, 64, 1), (5, 3, 4, 128)])
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
def test_moe_align_block_size_matches_reference(m, k, e, block, id_dtype):
    topk_ids = torch.stack([torch.randperm(e)[:k] for _ in range(m)]).to(id_dtype)
    sorted_ids, expert_ids, post_pad = moe_align_block_size(topk_ids, block, e)
    expected_sorted, expected_experts = _align_reference(topk_ids, e, block)
    total = len(expected_sorted)
    assert post_pad.tolist() == [total]
    assert sorted_ids[:total].tolist() == expected_sorted
    assert (sorted_ids[total:] == topk_ids.numel()).all()
    blocks = total // block
    assert expert_ids[:blocks].tolist() == expected_experts
    assert (expert_ids[blocks:] == -1).all()


def test_moe_align_block_size_op_fills_poisoned_buffers():
    topk_ids = torch.tensor([[3, 0], [3, 1]], dtype=torch.int32)
    sorted_ids = torch.full((4 + 4 * 3,), 99, dtype=torch.int32)
    expert_ids = torch.full((4,), 99, dtype=torch.int32)
    post_pad = torch.full((1,), 99, dtype=torch.int32)
    ops.moe_align_block_size(topk_ids, 4, 4, sorted_ids, expert_ids, post_pad)
    assert post_pad.item() == 12
    assert sorted_ids.tolist() == [1, 4, 4, 4, 3, 4, 4, 4, 0, 2, 4, 4, 4, 4, 4, 4]
    assert expert_ids.tolist() == [0, 1, 3, -1]


def test_moe_align_block_size_expert_map():
    topk_ids = torch.tensor([[0, 2], [1, 2]], dtype=torch.int32)
    expert_map = torch.tensor([-1, 0, 1], dtype=torch.int32)  # expert 0 elsewhere
    _, expert_ids, post_pad = moe_align_block_size(topk_ids, 2, 3, expert_map=expert_map)
    assert post_pad.item() == 6
    assert expert_ids[:3].tolist() == [-1, 0, 1]


def test_moe_align_block_size_rejects_bad_input():
    ids = torch.tensor([[0, 5]], dtype=torch.int32)
    bufs = (torch.empty(64, dtype=torch.int32), torch.empty(64, dtype=torch.int32),
            torch.empty(1, dtype=torch.int32))
    with pytest.raises(RuntimeError, match=r"expert id 5 outside \[0, 4\)"):
        ops.moe_align_block_size(ids, 4, 8, *bufs)
    with pytest.raises(RuntimeError, match="may need 30"):
        ops.moe_align_block_size(torch.tensor([[0, 1]], dtype=torch.int32), 4, 8,
                                 torch.empty(16, dtype=torch.int32), *bufs[1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,k,h", [(1, 2, 64), (37, 8, 200), (5, 1, 7)])
def test_moe_sum_matches_torch(dtype, m, k, h):
    x = torch.randn(m, k, h).to(dtype)
    out = torch.full((m, h), float("nan"), dtype=dtype)
    ops.moe_sum(x, out)
    torch.testing.assert_close(out, x.float().sum(1).to(dtype))


def test_moe_sum_rejects_bad_shapes():
    with pytest.raises(RuntimeError, match="input must be \\[M, k, H\\]"):
        ops.moe_sum(torch.randn(3, 2, 8), torch.empty(3, 9))


def test_opcheck_routing_ops():
    gating = torch.randn(6, 8)
    torch.library.opcheck(torch.ops._moe_C.topk_softmax, (*_topk_outputs(6, 2), gating))
    ids = torch.randint(0, 8, (6, 2), dtype=torch.int32)
    torch.library.opcheck(torch.ops._moe_C.moe_align_block_size,
                          (ids, 8, 4, torch.empty(12 + 8 * 3, dtype=torch.int32),
                           torch.empty(9, dtype=torch.int32), torch.empty(1, dtype=torch.int32)))
    torch.library.opcheck(torch.ops._moe_C.moe_sum, (torch.randn(6, 2, 16), torch.empty(6, 16)))


@pytest.mark.parametrize("renormalize", [False, True])
def test_fused_topk(renormalize):
    hidden, gating = torch.randn(11, 32), torch.randn(11, 16)
    weights, ids, _ = fused_topk(hidden, gating, 4, renormalize)
    expected_w, expected_ids = gating.softmax(-1).topk(4, dim=-1)
    if renormalize:
        expected_w = expected_w / expected_w.sum(-1, keepdim=True)
    torch.testing.assert_close(weights, expected_w)
    assert ids.dtype == torch.int32 and torch.equal(ids.long(), expected_ids)
    with pytest.raises(ValueError, match=r"top-k 17 must lie in \[1, 16\]"):
        fused_topk(hidden, gating, 17, renormalize)


def _grouped_reference(gating, topk, renormalize, groups, topk_group, scoring, bias, scale):
    """Token by token, as DeepSeek-V3's routing is described."""
    weights, ids = [], []
    for row in gating.float():
        scores = row.softmax(-1) if scoring == "softmax" else row.sigmoid()
        choice = scores + bias if bias is not None else scores
        per_group = choice.view(groups, -1)
        group_score = (per_group.topk(2).values.sum(-1) if bias is not None
                       else per_group.max(-1).values)
        kept = set(group_score.topk(topk_group).indices.tolist())
        size = row.numel() // groups
        candidates = [(float(choice[i]), -i) for i in range(row.numel()) if i // size in kept]
        chosen = [-neg for _, neg in sorted(candidates, reverse=True)[:topk]]
        w = scores[chosen]
        if renormalize:
            w = w / w.sum()
        weights.append(w * scale)
        ids.append(chosen)
    return torch.stack(weights), torch.tensor(ids)


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("renormalize", [False, True])
def test_grouped_topk_matches_reference(scoring, with_bias, renormalize):
    gating = torch.randn(9, 32)
    bias = torch.randn(32) * 0.1 if with_bias else None
    weights, ids = grouped_topk(torch.randn(9, 16), gating, 4, renormalize, num_expert_group=8,
                                topk_group=3, scoring_func=scoring, routed_scaling_factor=2.5,
                                e_score_correction_bias=bias)
    expected_w, expected_ids = _grouped_reference(gating, 4, renormalize, 8, 3, scoring, bias,
                                                  2.5)
    # the same experts (order within the top k may differ) with their weights
    order, expected_order = ids.long().argsort(-1), expected_ids.argsort(-1)
    assert torch.equal(ids.long().gather(1, order), expected_ids.gather(1, expected_order))
    torch.testing.assert_close(weights.gather(1, order), expected_w.gather(1, expected_order))


def test_grouped_topk_rejects_bad_groups():
    with pytest.raises(ValueError, match="do not split into 5 groups"):
        grouped_topk(torch.randn(2, 4), torch.randn(2, 32), 2, True, 5, 2)
    with pytest.raises(ValueError, match=r"topk_group 9 must lie in \[1, 8\]"):
        grouped_topk(torch.randn(2, 4), torch.randn(2, 32), 2, True, 8, 9)
