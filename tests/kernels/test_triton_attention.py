"""The Triton paged-decode attention, run on CPU by Triton's interpreter,
against the same float64 reference as the C++ kernels."""
from __future__ import annotations

import math
import os

import pytest
import torch

# Triton decides at @triton.jit time whether to interpret: set the flag
# before the kernel module is imported (only this test module imports it).
os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from vllm.attention.kv_cache_layout import kv_cache_shapes  # noqa: E402
from vllm.triton_ops.paged_decode_attention import paged_decode_attention  # noqa: E402

from tests.kernels.reference import paged_attention_ref  # noqa: E402


def _case(num_heads, num_kv_heads, head_size, block_size, lens, dtype):
    lens = torch.tensor(lens, dtype=torch.int32)
    max_blocks = math.ceil(int(lens.max()) / block_size)
    num_blocks = len(lens) * max_blocks + 2
    shapes = kv_cache_shapes(num_blocks, block_size, num_kv_heads, head_size)
    kc, vc = torch.randn(shapes.key).to(dtype), torch.randn(shapes.value).to(dtype)
    tables = torch.randperm(num_blocks)[: len(lens) * max_blocks].reshape(len(lens), -1)
    query = torch.randn(len(lens), num_heads, head_size).to(dtype)
    return query, kc, vc, tables.to(torch.int32), lens


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads", [(9, 3), (4, 4), (8, 1)], ids=["gqa", "mha", "mqa"])
@pytest.mark.parametrize("head_size", [64, 80, 128])
@pytest.mark.parametrize("block_size", [16, 32])
def test_triton_paged_decode(dtype, heads, head_size, block_size):
    query, kc, vc, tables, lens = _case(*heads, head_size, block_size, [1, 19, 70], dtype)
    out = torch.full_like(query, float("nan"))
    scale = head_size ** -0.5
    paged_decode_attention(out, query, kc, vc, tables, lens, scale)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1.6e-2, atol=1.6e-2)
    torch.testing.assert_close(out, paged_attention_ref(query, kc, vc, tables, lens, scale), **tol)


def test_triton_paged_decode_alibi():
    query, kc, vc, tables, lens = _case(8, 2, 64, 16, [5, 40], torch.float32)
    slopes = torch.tensor([2 ** (-8 * (h + 1) / 8) for h in range(8)])
    out = torch.full_like(query, float("nan"))
    paged_decode_attention(out, query, kc, vc, tables, lens, 0.125, slopes)
    torch.testing.assert_close(out, paged_attention_ref(query, kc, vc, tables, lens, 0.125, slopes),
                               rtol=1e-5, atol=1e-5)


def test_triton_rejects_odd_block_size():
    query, kc, vc, tables, lens = _case(4, 4, 64, 16, [5], torch.float32)
    kc = kc[..., :12]
    with pytest.raises(ValueError, match="power of two"):
        paged_decode_attention(torch.empty_like(query), query, kc, vc, tables, lens, 1.0)
