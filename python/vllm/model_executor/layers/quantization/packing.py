"""Quantized weights in the one form our CPU kernel reads.

Every supported format (GGUF block types, AWQ, GPTQ) is converted at load,
without dequantizing, into a `QuantizedWeight`: integer values per weight
(4-bit unsigned or 8-bit signed) with an fp16 scale and offset per group of
k values, w = scale * value + offset. `pack_quantized` then lays it out for
`_C::quant_linear` (csrc/cpu/kernel_table.h, QuantLinearArgs, describes the
layout and the arithmetic)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PANEL = 48  # kQuantPanel
HEADER_BYTES = 4 * PANEL  # 48 fp16 scales, then 48 fp16 offsets
ACT_BLOCK = 32  # the kernel quantizes x in blocks of 32


@dataclass
class QuantizedWeight:
    """A weight [n, k] as `values` [n, k] (bits 4: uint8 in [0, 15]; bits
    8: int8), `scales` and `offsets` [n, k // group_size] (fp16):
    w[i, j] = scales[i, j // g] * values[i, j] + offsets[i, j // g].

    `input_order` (GPTQ's act-order checkpoints): column j of these values
    is column input_order[j] of the weight, so the layer multiplies
    x[:, input_order] (the groups, scattered over k in the checkpoint, are
    contiguous here)."""
    values: torch.Tensor
    scales: torch.Tensor
    offsets: torch.Tensor
    bits: int
    group_size: int
    input_order: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n, k = self.values.shape
        g = self.group_size
        scale = self.scales.float().repeat_interleave(g, dim=1)
        offset = self.offsets.float().repeat_interleave(g, dim=1)
        ordered = self.values.float() * scale + offset
        if self.input_order is None:
            return ordered.to(dtype)
        weight = torch.empty_like(ordered)
        weight[:, self.input_order] = ordered  # back to the checkpoint's k order
        return weight.to(dtype)

    def row_range(self, start: int, length: int) -> "QuantizedWeight":
        """Rows start .. start + length (output features: a column-parallel
        rank's share); the input order, per input, stays."""
        return QuantizedWeight(self.values[start:start + length],
                               self.scales[start:start + length],
                               self.offsets[start:start + length], self.bits, self.group_size,
                               self.input_order)

    def column_range(self, start: int, length: int) -> "QuantizedWeight":
        """Inputs start .. start + length (a row-parallel rank's share):
        whole groups only, and not of an act-order weight, whose stored
        columns are a permutation of the inputs."""
        g = self.group_size
        if self.input_order is not None:
            raise ValueError("an act-order (desc_act) quantized weight cannot split its inputs "
                             "across tensor ranks: its groups are scattered over them")
        if start % g or length % g:
            raise ValueError(f"a quantized weight with groups of {g} inputs cannot split its "
                             f"inputs at {start} .. {start + length} across tensor ranks")
        groups = slice(start // g, (start + length) // g)
        return QuantizedWeight(self.values[:, start:start + length].contiguous(),
                               self.scales[:, groups].contiguous(),
                               self.offsets[:, groups].contiguous(), self.bits, g)

    def as_8bit(self) -> "QuantizedWeight":
        """The same weight in 8-bit form: u - 8 as signed values, the offset
        taking 8 scales (exact up to the offset's fp16 rounding)."""
        if self.bits == 8:
            return self
        offsets = (self.offsets.float() + 8 * self.scales.float()).to(torch.float16)
        return QuantizedWeight((self.values.to(torch.int16) - 8).to(torch.int8), self.scales,
                               offsets, 8, self.group_size, self.input_order)

    def regrouped(self, group_size: int) -> "QuantizedWeight":
        """The same weight with groups of `group_size`, which divides this
        one's (each scale and offset repeated)."""
        if group_size == self.group_size:
            return self
        times = self.group_size // group_size
        return QuantizedWeight(self.values, self.scales.repeat_interleave(times, dim=1),
                               self.offsets.repeat_interleave(times, dim=1), self.bits,
                               group_size, self.input_order)


def concat_rows(parts: list[QuantizedWeight]) -> QuantizedWeight:
    """Shards stacked along n (q/k/v, gate/up) as one weight: the widest
    bits and the smallest group of the parts. Their input orders must be
    one (act-order shards of one input share it); ValueError otherwise."""
    orders = [p.input_order for p in parts]
    if any(o is None for o in orders) != all(o is None for o in orders) or (
            orders[0] is not None and any(not torch.equal(o, orders[0]) for o in orders)):
        raise ValueError("the shards' input orders differ")
    bits = max(p.bits for p in parts)
    group = min(p.group_size for p in parts)
    parts = [(p.as_8bit() if bits == 8 else p).regrouped(group) for p in parts]
    return QuantizedWeight(torch.cat([p.values for p in parts]),
                           torch.cat([p.scales for p in parts]),
                           torch.cat([p.offsets for p in parts]), bits, group, orders[0])


def packed_supported(k: int, group_size: int) -> bool:
    """Whether the kernel takes this k and group size."""
    return (k % ACT_BLOCK == 0 and k % group_size == 0
            and (group_size == 16 or group_size % ACT_BLOCK == 0))


def packed_shape(n: int, k: int, bits: int, group_size: int) -> tuple[int, int, int]:
    return (-(-n // PANEL), k // group_size, HEADER_BYTES + PANEL * group_size * bits // 8)


def pack_quantized(qw: QuantizedWeight) -> torch.Tensor:
    """uint8 [ceil(n / 48), k / g, 192 + 48 g bits / 8]: per 48-column panel
    and group, the fp16 scales and offsets, then the values in 64-byte lines
    (16 columns x 4 bytes; 3 lines per step of 8 k (4-bit) or 4 k (8-bit))."""
    n, k = qw.shape
    g, bits = qw.group_size, qw.bits
    if not packed_supported(k, g):
        raise ValueError(f"quant_linear needs k % 32 == 0 and a group of 16 or a multiple of "
                         f"32 dividing k; got k={k}, group {g}")
    panels, groups = -(-n // PANEL), k // g
    pad = panels * PANEL - n
    values, scales, offsets = qw.values, qw.scales, qw.offsets
    if pad:
        values = F.pad(values, (0, 0, 0, pad))
        scales = F.pad(scales, (0, 0, 0, pad))
        offsets = F.pad(offsets, (0, 0, 0, pad))
    # header: [panels, groups, 2, 48] fp16 -> bytes
    head = torch.stack([scales.to(torch.float16), offsets.to(torch.float16)])  # [2, N, groups]
    head = head.view(2, panels, PANEL, groups).permute(1, 3, 0, 2).contiguous()
    head = head.view(torch.uint8).reshape(panels, groups, HEADER_BYTES)
    # values: k = group * g + step * kstep + (half * 4) + j; columns = sub * 16 + c
    if bits == 4:
        v = values.to(torch.uint8).view(panels, 3, 16, groups, g // 8, 2, 4)
        v = v.permute(0, 3, 4, 1, 2, 6, 5)  # panels, groups, steps, sub, c, j, half
        data = (v[..., 0] | (v[..., 1] << 4)).contiguous()
    else:
        v = values.to(torch.int8).view(torch.uint8).view(panels, 3, 16, groups, g // 4, 4)
        data = v.permute(0, 3, 4, 1, 2, 5).contiguous()
    data = data.reshape(panels, groups, -1)
    return torch.cat([head, data], dim=2).contiguous()


def unpack_columns(packed: torch.Tensor, bits: int, group_size: int, k: int,
                   columns: torch.Tensor) -> QuantizedWeight:
    """The rows `columns` (output columns, i.e. rows of W) of a packed
    weight, as a QuantizedWeight [len(columns), k] (the inverse of
    pack_quantized for those rows; an embedding lookup reads a tied LM head
    this way)."""
    g = group_size
    groups = k // g
    group_bytes = packed.shape[2]
    flat = packed.view(-1)
    panel, within = columns // PANEL, columns % PANEL
    # byte offsets: of each column's groups, then within a group
    group_at = (panel * groups).view(-1, 1) * group_bytes + torch.arange(groups) * group_bytes
    two = torch.arange(2)
    scale_at = group_at.unsqueeze(-1) + (2 * within).view(-1, 1, 1) + two  # [c, groups, 2]
    scales = flat[scale_at].view(torch.float16).squeeze(-1)
    offsets = flat[scale_at + 2 * PANEL].view(torch.float16).squeeze(-1)
    steps = g // (8 if bits == 4 else 4)
    in_line = (within // 16) * 64 + (within % 16) * 4  # [c]
    step_at = HEADER_BYTES + torch.arange(steps).view(-1, 1) * 3 * 64 + torch.arange(4)  # [steps, 4]
    data_at = (group_at + in_line.view(-1, 1)).view(-1, groups, 1, 1) + step_at
    picked = flat[data_at]  # [c, groups, steps, 4]
    if bits == 4:
        values = torch.stack([picked & 0x0F, picked >> 4], dim=3).reshape(-1, k)
    else:
        values = picked.reshape(-1, k).view(torch.int8)
    return QuantizedWeight(values, scales, offsets, bits, g)
