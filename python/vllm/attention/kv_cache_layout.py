"""The paged KV cache's tensor layout: the one place the engine learns it.

Per layer there is a key cache and a value cache; a block is one contiguous
chunk of each, on every device:

* key cache   ``[num_blocks, num_kv_heads, head_size, block_size]``: within a
  block, each dimension of the head is a row over the block's tokens, so the
  scores of a whole block are ``head_size`` vector FMAs of a broadcast query
  element against a row: no horizontal reductions.
* value cache ``[num_blocks, num_kv_heads, block_size, head_size]``: each
  token's value is a row, which the weighted sum adds into the output.

reshape_and_cache writes new tokens in this layout; the attention kernels,
copy_blocks and swap_blocks read it.
"""
from __future__ import annotations

from typing import NamedTuple


class KVCacheShapes(NamedTuple):
    key: tuple[int, int, int, int]
    value: tuple[int, int, int, int]


def kv_cache_shapes(num_blocks: int, block_size: int, num_kv_heads: int,
                    head_size: int, device_type: str = "cpu") -> KVCacheShapes:
    """Shapes of one layer's key cache and value cache."""
    for name, value in (("num_blocks", num_blocks), ("block_size", block_size),
                        ("num_kv_heads", num_kv_heads), ("head_size", head_size)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"no KV cache layout for device type {device_type!r}")
    return KVCacheShapes(key=(num_blocks, num_kv_heads, head_size, block_size),
                         value=(num_blocks, num_kv_heads, block_size, head_size))


def block_bytes(attention_layers, dtype, block_size: int) -> int:
    """Bytes one block of block_size tokens takes over every layer's cache:
    per-head keys and values, or MLA's one latent per token (each layer's
    cache_elements_per_token). Both workers size their caches by it."""
    import torch
    element = torch.empty((), dtype=dtype).element_size()
    per_token = sum(layer.cache_elements_per_token() for layer in attention_layers)
    return per_token * block_size * element
