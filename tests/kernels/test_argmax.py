"""greedy_argmax against torch.argmax on the fp32 values, per ISA: ties,
NaNs, infinities, odd vocab sizes, row-strided views."""
from __future__ import annotations

import pytest
import torch

from vllm import _custom_ops as ops

from tests.kernels.isa import cpu_isa  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not hasattr(torch.ops._C, "greedy_argmax"),
                                reason="CPU build only")

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def reference(logits: torch.Tensor) -> torch.Tensor:
    # torch's answer on the exact fp32 values (every 16-bit value is one)
    return logits.float().argmax(-1)


def run(logits: torch.Tensor) -> torch.Tensor:
    out = torch.full((logits.shape[0],), -7, dtype=torch.int64)  # poisoned
    torch.ops._C.greedy_argmax(out, logits)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, vocab", [(1, 49152), (3, 1), (5, 17), (64, 32000), (7, 4099),
                                         (2, 255), (2, 256), (2, 257)])
def test_matches_torch_argmax(cpu_isa, dtype, rows, vocab):
    logits = (torch.randn(rows, vocab) * 8).to(dtype)
    assert torch.equal(run(logits), reference(logits))
    assert torch.equal(ops.greedy_argmax(logits), reference(logits))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_go_to_the_first_maximum(cpu_isa, dtype):
    vocab = 5000
    logits = torch.randn(6, vocab).clamp(max=5).to(dtype)
    # the same maximum twice: in one chunk, in two chunks, in the tail, at the ends
    for row, (a, b) in enumerate([(10, 11), (100, 3000), (4990, 4999), (0, vocab - 1),
                                  (300, 4995), (4096, 4097)]):
        logits[row, a] = logits[row, b] = 9
    expected = torch.tensor([10, 100, 4990, 0, 300, 4096])
    assert torch.equal(reference(logits), expected)
    assert torch.equal(run(logits), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_infinities_follow_torch(cpu_isa, dtype):
    vocab = 3000
    logits = torch.randn(6, vocab).to(dtype)
    logits[0, 2500] = float("nan")            # a NaN after the max: torch ranks it highest
    logits[1, 7] = float("nan")
    logits[1, 2900] = float("nan")            # two NaNs: the first
    logits[2, 1234] = float("inf")            # +inf wins
    logits[3] = float("-inf")                 # all -inf: index 0
    logits[4, :2000] = float("-inf")          # banned tokens, max in the rest
    logits[5, 2999] = float("nan")            # NaN in the tail
    assert torch.equal(run(logits), reference(logits))


def test_row_strided_view(cpu_isa):
    base = torch.randn(8, 1000, dtype=torch.bfloat16)
    view = base[::2, 10:900]
    assert torch.equal(run(view), reference(view))


def test_rejects_bad_arguments():
    logits = torch.randn(3, 10)
    with pytest.raises(RuntimeError, match="int64"):
        torch.ops._C.greedy_argmax(torch.empty(3, dtype=torch.int32), logits)
    with pytest.raises(RuntimeError, match=r"must be a contiguous int64 \[3\]"):
        torch.ops._C.greedy_argmax(torch.empty(4, dtype=torch.int64), logits)
    with pytest.raises(RuntimeError, match="vocab > 0"):
        torch.ops._C.greedy_argmax(torch.empty(3, dtype=torch.int64), torch.randn(3, 0))
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        torch.ops._C.greedy_argmax(torch.empty(3, dtype=torch.int64), logits.double())


def test_opcheck():
    torch.library.opcheck(torch.ops._C.greedy_argmax.default,
                          (torch.empty(4, dtype=torch.int64), torch.randn(4, 300)))
