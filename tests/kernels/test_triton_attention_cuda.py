"""The Triton paged-decode attention compiled for the GPU (not interpreted)
against the float64 reference. Needs a GPU (any vllm build: the kernel is
Triton's); skipped when Triton's interpreter is on in this process, which
the CPU test module turns on at import: run this module on its own there."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from tests.kernels.gpu import paged_cache_case
from tests.kernels.reference import paged_attention_ref

# triton itself is imported only inside the tests: importing it here, before
# the CPU module sets TRITON_INTERPRET, would break that module's kernels.
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="Triton's interpreter is on in this process"),
]


def _case(num_heads, num_kv_heads, head_size, block_size, lens, dtype):
    kc, vc, tables, lens = paged_cache_case(num_kv_heads, head_size, block_size, lens, dtype)
    query = torch.randn(len(lens), num_heads, head_size).to(dtype)
    return query, kc, vc, tables, lens


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("heads", [(9, 3), (4, 4), (8, 1)], ids=["gqa", "mha", "mqa"])
@pytest.mark.parametrize("head_size", [64, 80, 128, 256])
@pytest.mark.parametrize("block_size", [16, 32])
def test_triton_paged_decode_gpu(dtype, heads, head_size, block_size):
    from vllm.triton_ops.paged_decode_attention import paged_decode_attention
    query, kc, vc, tables, lens = _case(*heads, head_size, block_size, [1, 19, 70, 1031], dtype)
    scale = head_size ** -0.5
    expected = paged_attention_ref(query, kc, vc, tables, lens, scale)
    q, k, v, t, n = (x.cuda() for x in (query, kc, vc, tables, lens))
    out = torch.full_like(q, float("nan"))
    paged_decode_attention(out, q, k, v, t, n, scale)
    # tl.dot on the GPU rounds fp32 inputs to tf32 unless told otherwise.
    tol = {torch.float32: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
           torch.float16: dict(rtol=4e-3, atol=4e-3)}[dtype]
    torch.testing.assert_close(out.cpu(), expected, **tol)


def test_triton_paged_decode_gpu_alibi():
    from vllm.triton_ops.paged_decode_attention import paged_decode_attention
    query, kc, vc, tables, lens = _case(8, 2, 64, 16, [5, 40, 300], torch.bfloat16)
    slopes = torch.tensor([2 ** (-8 * (h + 1) / 8) for h in range(8)])
    expected = paged_attention_ref(query, kc, vc, tables, lens, 0.125, slopes)
    q, k, v, t, n, sl = (x.cuda() for x in (query, kc, vc, tables, lens, slopes))
    out = torch.full_like(q, float("nan"))
    paged_decode_attention(out, q, k, v, t, n, 0.125, sl)
    torch.testing.assert_close(out.cpu(), expected, rtol=1.6e-2, atol=1.6e-2)
