"""The MoE ops on the GPU: the _moe_C routing kernels against the CPU ops
and torch references, and fused_experts' Triton GEMM compiled for the GPU
against the per-token float64 reference. Skipped cleanly without a GPU or
without a GPU build."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers.fused_moe import FusedMoE, fused_experts, fused_topk

from tests.kernels.gpu import GPU_TESTS
from tests.kernels.test_fused_moe import random_moe, reference

pytestmark = GPU_TESTS


@pytest.mark.parametrize("m,e,k", [(1, 8, 2), (300, 60, 4), (77, 256, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_topk_softmax_cuda(m, e, k, dtype):
    gating = (torch.randn(m, e) * 3).to(dtype)
    weights = torch.full((m, k), float("nan"), device="cuda")
    ids = torch.full((m, k), -1, dtype=torch.int32, device="cuda")
    token_expert = torch.full((m, k), -1, dtype=torch.int32, device="cuda")
    ops.topk_softmax(weights, ids, token_expert, gating.cuda())
    expected_w, expected_ids = gating.float().softmax(-1).sort(dim=-1, descending=True,
                                                                stable=True)
    torch.testing.assert_close(weights.cpu(), expected_w[:, :k], rtol=1e-5, atol=1e-6)
    assert torch.equal(ids.cpu().long(), expected_ids[:, :k])
    assert torch.equal(token_expert.cpu(),
                       (torch.arange(k) * m + torch.arange(m).unsqueeze(1)).int())


@pytest.mark.parametrize("m,k,e,block", [(1, 2, 8, 16), (2000, 8, 64, 64), (333, 4, 60, 16)])
def test_moe_align_block_size_cuda_equals_cpu(m, k, e, block):
    ids = torch.stack([torch.randperm(e)[:k] for _ in range(m)]).int()
    worst = ids.numel() + e * (block - 1)
    outs = {}
    for device in ("cpu", "cuda"):
        bufs = (torch.full((worst,), 7, dtype=torch.int32, device=device),
                torch.full((-(-worst // block),), 7, dtype=torch.int32, device=device),
                torch.full((1,), 7, dtype=torch.int32, device=device))
        ops.moe_align_block_size(ids.to(device), e, block, *bufs)
        outs[device] = [b.cpu() for b in bufs]
    for cpu, cuda in zip(outs["cpu"], outs["cuda"]):
        assert torch.equal(cpu, cuda)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_moe_sum_cuda(dtype):
    x = torch.randn(97, 8, 2048).to(dtype)
    out = torch.full((97, 2048), float("nan"), dtype=dtype, device="cuda")
    ops.moe_sum(x.cuda(), out)
    torch.testing.assert_close(out.cpu(), x.float().sum(1).to(dtype))


@pytest.mark.parametrize("e,topk,m,n,k", [(8, 2, 1, 1024, 512), (8, 2, 300, 1024, 512),
                                          (60, 4, 64, 704, 1024), (64, 8, 17, 256, 384)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_experts_cuda_matches_reference(e, topk, m, n, k, dtype):
    x = torch.randn(m, k).to(dtype)
    w1, w2 = random_moe(e, n, k, dtype)
    weights, ids, _ = fused_topk(x, torch.randn(m, e), topk, True)
    out = fused_experts(x.cuda(), w1.cuda(), w2.cuda(), weights.cuda(), ids.cuda())
    expected = reference(x, w1, w2, weights, ids, round_to=dtype)
    torch.testing.assert_close(out.cpu().double(), expected, rtol=3e-2, atol=3e-2)


def test_fused_moe_layer_cuda():
    layer = FusedMoE(16, 4, 256, 128, torch.bfloat16).cuda()
    w1, w2 = random_moe(16, 128, 256, torch.bfloat16)
    layer.w13_weight.data.copy_(w1)
    layer.w2_weight.data.copy_(w2)
    layer.process_weights_after_loading()
    x, gating = torch.randn(33, 256).to(torch.bfloat16), torch.randn(33, 16)
    out = layer(x.cuda(), gating.cuda())
    weights, ids, _ = fused_topk(x, gating, 4, True)
    torch.testing.assert_close(out.cpu().double(),
                               reference(x, w1, w2, weights, ids, round_to=torch.bfloat16),
                               rtol=3e-2, atol=3e-2)
