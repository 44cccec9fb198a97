"""The Triton MLA decode kernel, run on CPU by Triton's interpreter, against
the same paper-form float64 reference as the C++ MLA kernels
(tests/kernels/test_mla.py)."""
from __future__ import annotations

import os

import pytest
import torch

# Triton decides at @triton.jit time whether to interpret: set the flag
# before the kernel module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from vllm.triton_ops.mla_decode_attention import mla_decode_attention  # noqa: E402

from tests.kernels.test_mla import (SHAPES, TOL, absorbed, apply_w_uv, make_case,  # noqa: E402
                                    reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape_name", ["tiny", "odd-heads", "deepseek-v2-lite"])
@pytest.mark.parametrize("block_size", [16, 32])
def test_triton_mla_decode_matches_paper_reference(dtype, shape_name, block_size):
    s = SHAPES[shape_name]
    torch.manual_seed(0)
    seq_lens = [1, 37, 70] if shape_name != "deepseek-v2-lite" else [1, 40]
    cache, tables, w_kv_b, q_nope, q_pe = make_case(s, dtype, seq_lens, [1] * len(seq_lens),
                                                    block_size)
    scale = (s.nope + s.rope) ** -0.5
    query = absorbed(q_nope, q_pe, w_kv_b, s, dtype)
    out = torch.full((len(seq_lens), s.heads, s.lora), float("nan"), dtype=dtype)
    mla_decode_attention(out, query, cache, tables, torch.tensor(seq_lens, dtype=torch.int32),
                         scale)
    expected = reference(q_nope, q_pe, cache, w_kv_b, s, tables, seq_lens,
                         [1] * len(seq_lens), scale)
    torch.testing.assert_close(apply_w_uv(out, w_kv_b, s), expected, check_dtype=False,
                               **TOL[dtype])


def test_bad_split_is_refused():
    with pytest.raises(ValueError, match="do not make an MLA"):
        mla_decode_attention(torch.empty(1, 2, 48), torch.empty(1, 2, 48),
                             torch.empty(2, 16, 48), torch.zeros(1, 1, dtype=torch.int32),
                             torch.ones(1, dtype=torch.int32), 1.0)
