"""AWQ's and GPTQ's int32 words: 32 / bits values per word, value i in
bits [i * bits, (i + 1) * bits)."""
from __future__ import annotations

import math

import torch


def unpack_words(words: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """The unsigned values of int32 `words` (2-D), each word's values laid
    out in order along `dim` (1: a row of words becomes 32 / bits times as
    long; 0: a column does), as int32."""
    per_word = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    # int32 shifts are arithmetic: the mask drops the sign's copies
    values = (words.to(torch.int32).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    rows, cols = words.shape
    if dim == 1:
        return values.reshape(rows, cols * per_word)
    return values.permute(0, 2, 1).reshape(rows * per_word, cols)


def effective_group(group_of_k: torch.Tensor) -> int:
    """The largest group size g such that every run of g consecutive inputs
    (from 0) lies in one checkpoint group: the gcd of k and every position
    where `group_of_k` (non-decreasing) changes. Equal to the checkpoint's
    group size when it divides k."""
    k = group_of_k.numel()
    changes = (torch.nonzero(group_of_k[1:] != group_of_k[:-1]).flatten() + 1).tolist()
    return math.gcd(k, *changes)
