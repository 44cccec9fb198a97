"""AWQ checkpoints (AutoAWQ's GEMM version) as QuantizedWeight.

Per linear layer with k inputs and n outputs, groups of g inputs:
    qweight  int32 [k, n / 8]   4-bit values packed along n
    qzeros   int32 [k / g, n / 8]  4-bit zero points, packed the same way
    scales   fp16  [k / g, n]
    w[j, i] = scales[i // g, j] * (q[i, j] - z[i // g, j])
A word's nibble t holds column 8 c + AWQ_PACK_ORDER[t] of its 8 columns.
The zero point becomes the offset -scale * z (rounded to fp16)."""
from __future__ import annotations

import torch

from vllm.model_executor.layers.quantization.int32_packing import unpack_words
from vllm.model_executor.layers.quantization.packing import QuantizedWeight

AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# nibble holding each of a word's columns
_NIBBLE_OF_COLUMN = tuple(AWQ_PACK_ORDER.index(c) for c in range(8))


def unpack_awq(words: torch.Tensor) -> torch.Tensor:
    """int32 [r, c] AWQ words -> [r, 8 c] int32 values in column order."""
    nibbles = unpack_words(words, 4, dim=1)
    rows = nibbles.shape[0]
    return nibbles.view(rows, -1, 8)[..., list(_NIBBLE_OF_COLUMN)].reshape(rows, -1)


def awq_shapes(name: str, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
               group_size: int) -> tuple[int, int, int]:
    """(k, n, g) of an AWQ layer; ValueError naming the tensor whose shape
    disagrees with qweight's and the group size."""
    if qweight.dim() != 2 or qweight.dtype != torch.int32:
        raise ValueError(f"{name}.qweight must be a 2-D int32 tensor, got {qweight.dtype} "
                         f"{tuple(qweight.shape)}")
    k, n = qweight.shape[0], qweight.shape[1] * 8
    g = k if group_size == -1 else group_size
    if g <= 0 or k % g:
        raise ValueError(f"group size {group_size} does not divide {name}'s {k} inputs")
    for tensor, what, expected in ((qzeros, "qzeros", (k // g, n // 8)),
                                   (scales, "scales", (k // g, n))):
        if tuple(tensor.shape) != expected:
            raise ValueError(f"{name}.{what} has shape {tuple(tensor.shape)}, expected "
                             f"{expected} for qweight {tuple(qweight.shape)} (4 bits, group "
                             f"size {group_size})")
    return k, n, g


def awq_quantized(name: str, qweight: torch.Tensor, qzeros: torch.Tensor,
                  scales: torch.Tensor, group_size: int) -> QuantizedWeight:
    """The AWQ layer `name` as a QuantizedWeight [n, k]."""
    k, n, g = awq_shapes(name, qweight, qzeros, scales, group_size)
    values = unpack_awq(qweight).t().to(torch.uint8).contiguous()  # [n, k]
    zeros = unpack_awq(qzeros).t().float()  # [n, k / g]
    s = scales.t().float()
    return QuantizedWeight(values, s.to(torch.float16).contiguous(),
                           (-s * zeros).to(torch.float16).contiguous(), 4, g)

