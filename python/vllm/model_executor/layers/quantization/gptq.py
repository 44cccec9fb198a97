"""GPTQ checkpoints (AutoGPTQ / GPTQModel) as QuantizedWeight.

Per linear layer with k inputs and n outputs, b bits (4 or 8), G groups:
    qweight  int32 [k b / 32, n]  values packed along k (word r, slot t:
                                  input r 32 / b + t)
    qzeros   int32 [G, n b / 32]  zero points packed along n
    scales   fp16  [G, n]
    g_idx    int32 [k]            each input's group (absent: i // g)
    w[j, i] = scales[g_idx[i], j] * (q[i, j] - z[g_idx[i], j])
where z is the stored zero plus one in v1 checkpoints (checkpoint_format
"gptq", AutoGPTQ's historical off-by-one) and the stored zero in v2.

Act-order checkpoints (desc_act) scatter a group's inputs over k: the
inputs are sorted by group, which makes groups contiguous, and the layer
multiplies x in that order (QuantizedWeight.input_order)."""
from __future__ import annotations

import torch

from vllm.model_executor.layers.quantization.int32_packing import effective_group, unpack_words
from vllm.model_executor.layers.quantization.packing import QuantizedWeight, packed_supported

GPTQ_BITS = (4, 8)


def gptq_shapes(name: str, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                g_idx: torch.Tensor | None, bits: int, group_size: int) -> tuple[int, int]:
    """(k, n) of a GPTQ layer; ValueError naming the tensor whose shape
    disagrees with qweight's, the bits and the group size."""
    if bits not in GPTQ_BITS:
        raise ValueError(f"GPTQ with {bits} bits is not supported; supported: "
                         f"{', '.join(map(str, GPTQ_BITS))}")
    if qweight.dim() != 2 or qweight.dtype != torch.int32:
        raise ValueError(f"{name}.qweight must be a 2-D int32 tensor, got {qweight.dtype} "
                         f"{tuple(qweight.shape)}")
    per_word = 32 // bits
    k, n = qweight.shape[0] * per_word, qweight.shape[1]
    if group_size != -1 and group_size <= 0:
        raise ValueError(f"group size {group_size} is not positive (or -1)")
    groups = 1 if group_size == -1 else -(-k // group_size)
    if n % per_word:
        raise ValueError(f"{name} has {n} outputs, not a multiple of the {per_word} zero "
                         f"points a qzeros word holds at {bits} bits")
    expected = [(qzeros, "qzeros", (groups, n // per_word)), (scales, "scales", (groups, n))]
    if g_idx is not None:
        expected.append((g_idx, "g_idx", (k,)))
    for tensor, what, shape in expected:
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name}.{what} has shape {tuple(tensor.shape)}, expected {shape} "
                             f"for qweight {tuple(qweight.shape)} ({bits} bits, group size "
                             f"{group_size})")
    return k, n


def gptq_dequantized(name: str, qweight, qzeros, scales, g_idx, bits: int, group_size: int,
                     zeros_plus_one: bool) -> torch.Tensor:
    """The GPTQ layer's weight [n, k] in fp32, by the format's formula."""
    k, n = gptq_shapes(name, qweight, qzeros, scales, g_idx, bits, group_size)
    groups = _group_of_input(g_idx, k, group_size)
    q = unpack_words(qweight, bits, dim=0).float()  # [k, n]
    z = unpack_words(qzeros, bits, dim=1).float() + (1 if zeros_plus_one else 0)
    return ((q - z[groups]) * scales.float()[groups]).t().contiguous()


def _group_of_input(g_idx: torch.Tensor | None, k: int, group_size: int) -> torch.Tensor:
    if g_idx is not None:
        return g_idx.long()
    return torch.arange(k) // (k if group_size == -1 else group_size)


def gptq_quantized(name: str, qweight, qzeros, scales, g_idx, bits: int, group_size: int,
                   zeros_plus_one: bool) -> QuantizedWeight | None:
    """The GPTQ layer `name` as a QuantizedWeight [n, k], or None where its
    groups, made contiguous, cannot be cut into groups our kernel takes."""
    k, n = gptq_shapes(name, qweight, qzeros, scales, g_idx, bits, group_size)
    groups = _group_of_input(g_idx, k, group_size)
    if groups.numel() and (groups.min() < 0 or groups.max() >= scales.shape[0]):
        raise ValueError(f"{name}.g_idx names groups outside 0..{scales.shape[0] - 1}")
    order = None
    if bool((groups[1:] < groups[:-1]).any()):  # act-order: sort the inputs by group
        order = torch.argsort(groups, stable=True)
        groups = groups[order]
    g = effective_group(groups)
    if not packed_supported(k, g):
        return None
    q = unpack_words(qweight, bits, dim=0)  # [k, n]
    if order is not None:
        q = q[order]
    z = unpack_words(qzeros, bits, dim=1).float() + (1 if zeros_plus_one else 0)  # [G, n]
    first = groups[::g]  # each kernel group's checkpoint group
    s = scales.float()[first].t()  # [n, k / g]
    z = z[first].t()
    if bits == 4:
        values, offsets = q.t().to(torch.uint8), -s * z
    else:  # signed bytes: q - 128, the offset taking 128 scales
        values, offsets = (q - 128).t().to(torch.int8), s * (128 - z)
    return QuantizedWeight(values.contiguous(), s.to(torch.float16).contiguous(),
                           offsets.to(torch.float16).contiguous(), bits, g, order)
