"""rotary_embedding (NeoX and GPT-J, partial rotary) against the reference."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops

from tests.kernels.isa import cpu_isa  # noqa: F401  (fixture)
from tests.kernels.reference import cos_sin_cache_ref, rotary_ref

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5),
       torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
       torch.float16: dict(rtol=2e-3, atol=2e-3)}


@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_size,rot_dim", [(64, 64), (80, 80), (96, 96), (128, 128),
                                               (256, 256), (128, 64), (80, 32)])
@pytest.mark.parametrize("num_tokens", [1, 13])
def test_rotary(cpu_isa, is_neox, dtype, head_size, rot_dim, num_tokens):
    num_heads, num_kv_heads, max_pos = 9, 3, 4096
    cache = cos_sin_cache_ref(max_pos, rot_dim, 10000.0, dtype)
    positions = torch.randint(0, max_pos, (num_tokens,))
    query = torch.randn(num_tokens, num_heads * head_size, dtype=dtype)
    key = torch.randn(num_tokens, num_kv_heads * head_size, dtype=dtype)
    expected_q, expected_k = rotary_ref(positions, query, key, head_size, cache, is_neox)
    ops.rotary_embedding(positions, query, key, head_size, cache, is_neox)
    torch.testing.assert_close(query, expected_q, **TOL[dtype])
    torch.testing.assert_close(key, expected_k, **TOL[dtype])


def test_rotary_3d_layout_and_no_key(cpu_isa):
    cache = cos_sin_cache_ref(64, 64, 10000.0, torch.float32)
    positions = torch.arange(5)
    query = torch.randn(5, 4, 64)
    expected_q, _ = rotary_ref(positions, query, None, 64, cache, True)
    ops.rotary_embedding(positions, query, None, 64, cache, True)
    torch.testing.assert_close(query, expected_q, rtol=1e-5, atol=1e-5)


def test_rotary_strided_query_rows(cpu_isa):
    # query and key as column slices of one fused qkv projection output
    cache = cos_sin_cache_ref(128, 64, 10000.0, torch.float32)
    positions = torch.randint(0, 128, (6,))
    qkv = torch.randn(6, (4 + 2 + 2) * 64)
    query, key = qkv[:, :256], qkv[:, 256:384]
    expected_q, expected_k = rotary_ref(positions, query, key, 64, cache, True)
    untouched = qkv[:, 384:].clone()
    ops.rotary_embedding(positions, query, key, 64, cache, True)
    torch.testing.assert_close(query, expected_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(key, expected_k, rtol=1e-5, atol=1e-5)
    assert torch.equal(qkv[:, 384:], untouched)


def test_rotary_rejects_out_of_range_positions():
    cache = cos_sin_cache_ref(16, 64, 10000.0, torch.float32)
    with pytest.raises(RuntimeError, match="positions must lie in"):
        ops.rotary_embedding(torch.tensor([3, 16]), torch.randn(2, 64), None, 64, cache, True)


def test_opcheck_rotary():
    cache = cos_sin_cache_ref(32, 64, 10000.0, torch.bfloat16)
    args = (torch.randint(0, 32, (3,)), torch.randn(3, 128, dtype=torch.bfloat16),
            torch.randn(3, 64, dtype=torch.bfloat16), 64, cache, True)
    torch.library.opcheck(torch.ops._C.rotary_embedding.default, args)
