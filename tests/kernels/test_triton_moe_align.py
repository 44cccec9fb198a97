"""The Triton moe_align_block_size, run on CPU by Triton's interpreter,
against the _moe_C op (itself checked against a Python reference in
test_moe_routing_ops.py), and reached through the Python API when
VLLM_ENABLE_MOE_ALIGN_BLOCK_SIZE_TRITON=1."""
from __future__ import annotations

import os

import pytest
import torch

# Triton decides at @triton.jit time whether to interpret: set the flag
# before the kernel module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from vllm import _custom_ops as ops  # noqa: E402
from vllm.model_executor.layers.fused_moe import moe_align_block_size  # noqa: E402
from vllm.triton_ops.moe_align_block_size import moe_align_block_size_triton  # noqa: E402


def _buffers(numel, e, block, fill):
    worst = numel + e * (block - 1)
    return (torch.full((worst,), fill, dtype=torch.int32),
            torch.full((-(-worst // block),), fill, dtype=torch.int32),
            torch.full((1,), fill, dtype=torch.int32))


@pytest.mark.parametrize("m,k,e,block", [(1, 2, 8, 16), (45, 2, 8, 16), (70, 4, 60, 32),
                                         (300, 8, 16, 64)])
def test_triton_align_equals_the_op(m, k, e, block):
    topk_ids = torch.stack([torch.randperm(e)[:k] for _ in range(m)]).int()
    ours = _buffers(topk_ids.numel(), e, block, 12345)
    theirs = _buffers(topk_ids.numel(), e, block, -12345)
    moe_align_block_size_triton(topk_ids, e, block, *ours)
    ops.moe_align_block_size(topk_ids, e, block, *theirs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_python_api_takes_the_triton_path(monkeypatch):
    import vllm.triton_ops.moe_align_block_size as module
    calls = []
    original = module.moe_align_block_size_triton
    monkeypatch.setattr(module, "moe_align_block_size_triton",
                        lambda *a: calls.append(1) or original(*a))
    monkeypatch.setenv("VLLM_ENABLE_MOE_ALIGN_BLOCK_SIZE_TRITON", "1")
    topk_ids = torch.tensor([[2, 0], [2, 1]], dtype=torch.int32)
    sorted_ids, expert_ids, post_pad = moe_align_block_size(topk_ids, 2, 3)
    assert calls == [1]
    assert post_pad.item() == 6
    assert sorted_ids[:6].tolist() == [1, 4, 3, 4, 0, 2]
    assert expert_ids[:3].tolist() == [0, 1, 2]


def test_triton_align_rejects_bad_ids():
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        moe_align_block_size_triton(torch.tensor([[0, 4]], dtype=torch.int32), 4, 8,
                                    *_buffers(2, 4, 8, 0))
