"""The Triton fused-MoE GEMM path (fused_experts on GPUs), run on CPU by
Triton's interpreter, against the per-token float64 reference of
test_fused_moe.py: E / top-k / M / N / K with odd sizes and experts that
receive no token, fp32 and bf16, weights on the input, expert maps; and the
per-(E, N, device) block-size configs."""
from __future__ import annotations

import json
import os

import pytest
import torch

# Triton decides at @triton.jit time whether to interpret: set the flag
# before the kernel module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from vllm.model_executor.layers.fused_moe import fused_topk, triton_experts  # noqa: E402
from vllm.model_executor.layers.fused_moe.experts import moe_activation  # noqa: E402

from tests.kernels.test_fused_moe import random_moe, reference  # noqa: E402

CASES = [(8, 2, 1, 64, 32), (8, 2, 37, 48, 64), (60, 4, 9, 32, 48), (16, 6, 70, 40, 24),
         (4, 1, 20, 24, 40)]


@pytest.mark.parametrize("e,topk,m,n,k", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_experts_match_reference(e, topk, m, n, k, dtype):
    x = torch.randn(m, k).to(dtype)
    w1, w2 = random_moe(e, n, k, dtype)
    weights, ids, _ = fused_topk(x, torch.randn(m, e), topk, True)
    out = triton_experts.fused_experts_triton(x, w1, w2, weights, ids, moe_activation("silu"))
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), reference(x, w1, w2, weights, ids),
                                   rtol=1e-4, atol=1e-5)
    else:  # the expert outputs are rounded to bf16 after the weight multiply here
        torch.testing.assert_close(out.double(), reference(x, w1, w2, weights, ids,
                                                           round_to=dtype),
                                   rtol=3e-2, atol=3e-2)


def test_router_weight_on_input_and_expert_map():
    e_global, n, k = 6, 32, 16
    w1, w2 = random_moe(e_global, n, k, torch.float32)
    x = torch.randn(10, k)
    weights, ids, _ = fused_topk(x, torch.randn(10, e_global), 1, False)
    out = triton_experts.fused_experts_triton(x, w1, w2, weights, ids, moe_activation("silu"),
                                              apply_router_weight_on_input=True)
    expected = reference(x * weights, w1, w2, torch.ones_like(weights), ids)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-5)

    local = [0, 3, 5]
    expert_map = torch.full((e_global,), -1, dtype=torch.int32)
    expert_map[local] = torch.arange(3, dtype=torch.int32)
    weights, ids, _ = fused_topk(x, torch.randn(10, e_global), 2, False)
    out = triton_experts.fused_experts_triton(x, w1[local], w2[local], weights, ids,
                                              moe_activation("silu"), expert_map=expert_map,
                                              global_num_experts=e_global)
    kept = torch.tensor([[float(int(i) in local) for i in row] for row in ids])
    torch.testing.assert_close(out.double(), reference(x, w1, w2, weights * kept, ids),
                               rtol=1e-4, atol=1e-5)


def test_configs_come_from_the_json_file_nearest_batch(tmp_path, monkeypatch):
    name = triton_experts.config_file_name(8, 64, "cpu")
    assert name == "E=8,N=64,device_name=cpu.json"
    configs = {"1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 16},
               "64": {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 16, "BLOCK_SIZE_K": 32}}
    (tmp_path / name).write_text(json.dumps(configs))
    monkeypatch.setattr(triton_experts, "CONFIG_DIR", str(tmp_path))
    triton_experts._tuned_configs.cache_clear()
    try:
        assert triton_experts.get_config(3, 8, 64, torch.device("cpu")) == configs["1"]
        assert triton_experts.get_config(50, 8, 64, torch.device("cpu")) == configs["64"]
        # and a layer runs with it
        x = torch.randn(50, 16)
        w1, w2 = random_moe(8, 64, 16, torch.float32)
        weights, ids, _ = fused_topk(x, torch.randn(50, 8), 2, True)
        out = triton_experts.fused_experts_triton(x, w1, w2, weights, ids, moe_activation("silu"))
        torch.testing.assert_close(out.double(), reference(x, w1, w2, weights, ids),
                                   rtol=1e-4, atol=1e-5)
    finally:
        monkeypatch.undo()
        triton_experts._tuned_configs.cache_clear()
    assert triton_experts.get_config(3, 8, 64, torch.device("cpu")) == \
        triton_experts.default_config(3, 8)
