"""The CUDA MLA kernels (concat_and_cache_mla, mla_decode_kvcache,
mla_prefill_kvcache) on the GPU against the paper-form float64 reference of
tests/kernels/test_mla.py. Skipped cleanly without a GPU or a GPU build."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops

from tests.kernels.gpu import GPU_TESTS
from tests.kernels.test_mla import (SHAPES, TOL, absorbed, apply_w_uv, make_case,
                                    reference)

pytestmark = GPU_TESTS
SCALE_1 = torch.tensor(1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("block_size", [16, 64])
def test_decode_cuda(dtype, shape_name, block_size):
    s = SHAPES[shape_name]
    torch.manual_seed(0)
    seq_lens = [1, 37, 130, 64, 1100]
    cache, tables, w_kv_b, q_nope, q_pe = make_case(s, dtype, seq_lens, [1] * 5, block_size)
    scale = (s.nope + s.rope) ** -0.5
    query = absorbed(q_nope, q_pe, w_kv_b, s, dtype)
    expected = reference(q_nope, q_pe, cache, w_kv_b, s, tables, seq_lens, [1] * 5, scale)
    out = torch.full((5, s.heads, s.lora), float("nan"), dtype=dtype, device="cuda")
    ops.mla_decode_kvcache(out, query.cuda(), cache.cuda(), scale, tables.cuda(),
                           torch.tensor(seq_lens, dtype=torch.int32, device="cuda"))
    torch.testing.assert_close(apply_w_uv(out.cpu(), w_kv_b, s), expected, check_dtype=False,
                               **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_prefill_cuda(dtype, shape_name):
    s = SHAPES[shape_name]
    torch.manual_seed(1)
    seq_lens, q_lens = [19, 70, 33, 8, 45], [19, 25, 1, 0, 45]
    cache, tables, w_kv_b, q_nope, q_pe = make_case(s, dtype, seq_lens, q_lens, 16)
    query = absorbed(q_nope, q_pe, w_kv_b, s, dtype)
    expected = reference(q_nope, q_pe, cache, w_kv_b, s, tables, seq_lens, q_lens, 0.11)
    starts = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0)), dtype=torch.int32)
    out = torch.full((sum(q_lens), s.heads, s.lora), float("nan"), dtype=dtype, device="cuda")
    ops.mla_prefill_kvcache(out, query.cuda(), cache.cuda(), 0.11, tables.cuda(), starts.cuda(),
                            torch.tensor(seq_lens, dtype=torch.int32, device="cuda"))
    torch.testing.assert_close(apply_w_uv(out.cpu(), w_kv_b, s), expected, check_dtype=False,
                               **TOL[dtype])


def test_concat_and_cache_mla_cuda():
    torch.manual_seed(2)
    cache = torch.zeros(6, 16, 48, device="cuda")
    wide = torch.randn(5, 80, device="cuda")
    kv_c, k_pe = wide[:, :32], wide[:, 60:76]
    slots = torch.tensor([3, 17, -1, 95, 40], device="cuda")
    ops.concat_and_cache_mla(kv_c, k_pe, cache, slots, "auto", SCALE_1)
    flat = cache.view(-1, 48).cpu()
    for t, slot in enumerate(slots.tolist()):
        if slot >= 0:
            assert torch.equal(flat[slot], torch.cat([kv_c[t], k_pe[t]]).cpu())
    assert flat.abs().sum(-1).nonzero().flatten().tolist() == [3, 17, 40, 95]


def test_triton_mla_decode_compiled_for_the_gpu():
    """The Triton MLA decode kernel compiled (not interpreted), when triton
    is importable and its interpreter is off in this process."""
    import importlib.util
    import os
    if importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("needs triton, not interpreted")
    from vllm.triton_ops.mla_decode_attention import mla_decode_attention
    s = SHAPES["deepseek-v2-lite"]
    torch.manual_seed(3)
    seq_lens = [1, 300, 1100]
    cache, tables, w_kv_b, q_nope, q_pe = make_case(s, torch.bfloat16, seq_lens, [1] * 3, 32)
    query = absorbed(q_nope, q_pe, w_kv_b, s, torch.bfloat16)
    expected = reference(q_nope, q_pe, cache, w_kv_b, s, tables, seq_lens, [1] * 3, 0.07)
    out = torch.full((3, s.heads, s.lora), float("nan"), dtype=torch.bfloat16, device="cuda")
    mla_decode_attention(out, query.cuda(), cache.cuda(), tables.cuda(),
                         torch.tensor(seq_lens, dtype=torch.int32, device="cuda"), 0.07)
    torch.testing.assert_close(apply_w_uv(out.cpu(), w_kv_b, s), expected, check_dtype=False,
                               **TOL[torch.bfloat16])
