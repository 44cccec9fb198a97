"""GGUF block types as QuantizedWeight, without dequantizing: each block's
integers become the values and its scales (and minimums) the groups' fp16
scales and offsets. Layouts as ggml defines them (ggml-common.h): a row of
k weights is k / block_size blocks in order.

    Q4_0  (32)  d f16, 16 bytes: low nibbles weights 0-15, high 16-31; w = d (q - 8)
    Q4_1  (32)  d, m f16, nibbles as Q4_0; w = d q + m
    Q8_0  (32)  d f16, 32 int8; w = d q
    Q4_K  (256) d, dmin f16, 12 bytes of 6-bit scales/mins for 8 sub-blocks
                of 32, 128 bytes: per 64 weights, 32 bytes whose low nibbles
                are the first 32, high nibbles the next 32; w = d sc q - dmin m
    Q5_K  (256) as Q4_K plus 32 bytes of fifth bits (sub-block i: bit i)
    Q6_K  (256) 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 int8
                scales (one per 16 weights), d f16; w = d sc (q - 32)

Q5_K's 5-bit and Q6_K's 6-bit values go to the 8-bit kernel (Q6_K with
groups of 16); the others keep their width."""
from __future__ import annotations

import numpy as np
import torch

from vllm.model_executor.layers.quantization.packing import QuantizedWeight, packed_supported

# type name -> (weights per block, bytes per block)
BLOCKS = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q8_0": (32, 34), "Q4_K": (256, 144),
          "Q5_K": (256, 176), "Q6_K": (256, 210)}
SUPPORTED_TYPES = tuple(BLOCKS)


def _f16(raw: torch.Tensor) -> torch.Tensor:
    """fp16 values of a [..., 2 * j] uint8 tensor, as float32 [..., j]."""
    return raw.contiguous().view(torch.float16).float()


def _k_scales(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 6-bit scales and mins of K-quant super-blocks, from their 12
    bytes: bytes 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of
    scales 4-7, bytes 4-7 the same for the mins, bytes 8-11 the low 4 bits
    of scales 4-7 (low nibble) and of mins 4-7 (high nibble)."""
    b = raw.to(torch.int32)
    sc = torch.cat([b[..., 0:4] & 63, (b[..., 8:12] & 15) | ((b[..., 0:4] >> 6) << 4)], dim=-1)
    mn = torch.cat([b[..., 4:8] & 63, (b[..., 8:12] >> 4) | ((b[..., 4:8] >> 6) << 4)], dim=-1)
    return sc.float(), mn.float()


def _nibbles_by_halves(qs: torch.Tensor) -> torch.Tensor:
    """[..., 16] bytes -> [..., 32]: low nibbles, then high nibbles."""
    return torch.cat([qs & 15, qs >> 4], dim=-1)


def _nibbles_by_chunks(qs: torch.Tensor) -> torch.Tensor:
    """[..., 128] bytes -> [..., 8, 32]: per 32-byte chunk, its low nibbles
    (one sub-block) then its high nibbles (the next)."""
    chunks = qs.reshape(*qs.shape[:-1], 4, 32)
    return torch.stack([chunks & 15, chunks >> 4], dim=-2).reshape(*qs.shape[:-1], 8, 32)


def gguf_quantized(raw: np.ndarray, type_name: str, n: int, k: int) -> QuantizedWeight:
    """The weight [n, k] stored as `raw` ([n, row bytes] uint8) in GGUF type
    `type_name` (one of SUPPORTED_TYPES)."""
    per_block, block_bytes = BLOCKS[type_name]
    # a copy: the file's memory map is read-only, and what is built from it
    # must not keep the map alive
    blocks = torch.from_numpy(np.array(raw, dtype=np.uint8)).view(n, k // per_block, block_bytes)
    half = torch.float16
    if type_name in ("Q4_0", "Q4_1"):
        data_at = 2 if type_name == "Q4_0" else 4
        d = _f16(blocks[..., 0:2]).squeeze(-1)
        values = _nibbles_by_halves(blocks[..., data_at:data_at + 16]).reshape(n, k)
        offsets = -8 * d if type_name == "Q4_0" else _f16(blocks[..., 2:4]).squeeze(-1)
        return QuantizedWeight(values, d.to(half), offsets.to(half), 4, 32)
    if type_name == "Q8_0":
        d = _f16(blocks[..., 0:2]).squeeze(-1)
        values = blocks[..., 2:34].contiguous().view(torch.int8).reshape(n, k)
        return QuantizedWeight(values, d.to(half), torch.zeros_like(d).to(half), 8, 32)
    if type_name in ("Q4_K", "Q5_K"):
        d, dmin = _f16(blocks[..., 0:2]), _f16(blocks[..., 2:4])  # [n, nb, 1]
        sc, mn = _k_scales(blocks[..., 4:16])  # [n, nb, 8]
        scales, offsets = d * sc, -(dmin * mn)
        if type_name == "Q4_K":
            values = _nibbles_by_chunks(blocks[..., 16:144]).reshape(n, k)
            return QuantizedWeight(values, scales.reshape(n, -1).to(half),
                                   offsets.reshape(n, -1).to(half), 4, 32)
        low = _nibbles_by_chunks(blocks[..., 48:176])  # [n, nb, 8, 32]
        qh = blocks[..., 16:48].unsqueeze(-2)  # [n, nb, 1, 32]: sub-block i takes bit i
        fifth = (qh >> torch.arange(8, dtype=torch.uint8).view(8, 1)) & 1
        values = (low | (fifth << 4)).to(torch.int16) - 16  # 0..31 as signed bytes
        offsets = offsets + 16 * scales
        return QuantizedWeight(values.to(torch.int8).reshape(n, k),
                               scales.reshape(n, -1).to(half), offsets.reshape(n, -1).to(half),
                               8, 32)
    if type_name == "Q6_K":
        ql = blocks[..., 0:128].reshape(n, -1, 2, 2, 32)  # [half][32-byte chunk t][l]
        qh = blocks[..., 128:192].reshape(n, -1, 2, 1, 32)  # [half][l]
        low = torch.stack([ql & 15, ql >> 4], dim=-3)  # [half][nibble s][t][l]
        high = (qh >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(4, 1)) & 3  # [half][2s+t][l]
        q = (low.reshape(n, -1, 2, 4, 32) | (high << 4)).to(torch.int16) - 32
        sc = blocks[..., 192:208].contiguous().view(torch.int8).float()  # [n, nb, 16]
        d = _f16(blocks[..., 208:210])
        return QuantizedWeight(q.to(torch.int8).reshape(n, k), (d * sc).reshape(n, -1).to(half),
                               torch.zeros(n, k // 16, dtype=half), 8, 16)
    raise ValueError(f"GGUF type {type_name} is not one of {', '.join(SUPPORTED_TYPES)}")


def kernel_takes(type_name: str, k: int) -> bool:
    """Whether a GGUF weight of this type and row length stays quantized."""
    if type_name not in BLOCKS:
        return False
    return packed_supported(k, 16 if type_name == "Q6_K" else 32)
