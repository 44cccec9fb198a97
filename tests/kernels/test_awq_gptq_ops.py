"""vLLM's quantized-GEMM ops on checkpoint layouts (awq_dequantize,
awq_gemm, gptq_shuffle, gptq_gemm, ggml_dequantize, ggml_mul_mat_vec_a8,
ggml_mul_mat_a8) against dequantize-then-matmul in PyTorch, the weights
built by the tests' own packers (tests/engine/quant_checkpoints.py) and
GGUF's by the `gguf` package. x goes through int8 per 32 values in our
kernel, hence the 2% relative tolerance of the GEMMs; the dequantizations
are exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vllm import _custom_ops as ops
from tests.engine.quant_checkpoints import (awq_tensors, dequantize, gptq_tensors,
                                            quantize_groups)

GEMM_TOL = 0.02


def _rel_err(got, want) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def _awq(k=256, n=96, group=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.1
    group_of_input = torch.arange(k) // group
    q, s, z = quantize_groups(w, group_of_input, 4, False)
    return awq_tensors(q, s, z), dequantize(q, s, z, group_of_input)  # dense [n, k]


@pytest.mark.parametrize("group", [32, 64, 256])
def test_awq_dequantize_is_exact(group):
    t, dense = _awq(group=group)
    got = ops.awq_dequantize(t["qweight"], t["scales"], t["qzeros"], 0, 0, 0)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), dense.T.half().float(), rtol=0, atol=2e-3 * 0.1)


@pytest.mark.parametrize("m", [1, 7, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_awq_gemm_matches_dequantize_then_matmul(m, dtype):
    t, dense = _awq(seed=m)
    x = torch.randn(m, 256).to(dtype)
    got = ops.awq_gemm(x, t["qweight"], t["scales"], t["qzeros"], 8)
    assert got.dtype == dtype and got.shape == (m, 96)
    assert _rel_err(got, x.float() @ dense.T) < GEMM_TOL


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("v2", [False, True])
def test_gptq_gemm_matches_dequantize_then_matmul(bits, v2):
    k, n, group = 256, 64, 32
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(n, k, generator=g) * 0.1
    group_of_input = torch.arange(k) // group
    q, s, z = quantize_groups(w, group_of_input, bits, False, min_zero=0 if v2 else 1)
    t = gptq_tensors(q, s, z, group_of_input, bits, v1=not v2)
    dense = dequantize(q, s, z, group_of_input)
    x = torch.randn(5, k)
    for use_exllama, g_idx in ((False, t["g_idx"]), (True, torch.empty(0, dtype=torch.int32))):
        got = ops.gptq_gemm(x, t["qweight"], t["qzeros"], t["scales"], g_idx, use_exllama, v2,
                            bits)
        assert _rel_err(got, x @ dense.T) < GEMM_TOL


@pytest.mark.parametrize("bits", [4, 8])
def test_act_order_gptq_shuffled_then_multiplied(bits):
    # vLLM's preparation of an act-order layer: g_idx -> its argsort, the
    # weight shuffled by it, gptq_gemm with use_exllama and the argsort
    k, n, group = 256, 48, 64
    g = torch.Generator().manual_seed(3)
    w = torch.randn(n, k, generator=g) * 0.1
    perm = torch.randperm(k, generator=g)
    group_of_input = torch.empty(k, dtype=torch.int64)
    group_of_input[perm] = torch.arange(k) // group
    q, s, z = quantize_groups(w, group_of_input, bits, True)
    t = gptq_tensors(q, s, z, group_of_input, bits, v1=True)
    dense = dequantize(q, s, z, group_of_input)
    x = torch.randn(3, k)
    # unshuffled, g_idx as stored
    got = ops.gptq_gemm(x, t["qweight"], t["qzeros"], t["scales"], t["g_idx"], False, False, bits)
    assert _rel_err(got, x @ dense.T) < GEMM_TOL
    order = torch.argsort(t["g_idx"]).to(torch.int32)
    qweight = t["qweight"].clone()
    ops.gptq_shuffle(qweight, order, bits)
    got = ops.gptq_gemm(x, qweight, t["qzeros"], t["scales"], order, True, False, bits)
    assert _rel_err(got, x @ dense.T) < GEMM_TOL


gguf = pytest.importorskip("gguf")
GGML = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 8, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}


@pytest.mark.parametrize("type_name", list(GGML))
def test_ggml_ops_match_gguf_dequantize(type_name):
    from tests.engine.test_gguf_quantized import random_blocks
    rng = np.random.default_rng(GGML[type_name])
    n, k = 40, 512
    raw = random_blocks(type_name, n, k, rng)
    want = torch.from_numpy(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[type_name])
                            .astype(np.float32))
    W = torch.from_numpy(raw)
    got = ops.ggml_dequantize(W, GGML[type_name], n, k, torch.float32)
    # K-types' super-block x sub-block scale products are rounded to fp16 on our side
    tol = 0 if type_name in ("Q4_0", "Q4_1", "Q8_0") else 2 ** -10 * want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=0, atol=tol)
    for rows, op in ((1, ops.ggml_mul_mat_vec_a8), (33, ops.ggml_mul_mat_a8)):
        x = torch.randn(rows, k)
        assert _rel_err(op(W, x, GGML[type_name], n), x @ want.T) < GEMM_TOL


def test_ggml_type_we_do_not_read_is_named():
    with pytest.raises(ValueError, match=r"GGML type 10 is not supported; supported: 2 \(Q4_0\)"):
        ops.ggml_dequantize(torch.zeros(4, 84, dtype=torch.uint8), 10, 4, 256, torch.float32)
