"""The paged KV cache's tensor layout: the one place the engine learns it.

Per layer there is a key cache and a value cache, each
``[num_blocks, num_kv_heads, block_size, head_size]`` on every device: a block
is one contiguous chunk, and inside it each KV head's tokens are contiguous
rows of ``head_size``. CPU decode attention then streams each (block, head)
as one sequential read and dots every query head of a GQA group against the
same key row; reshape_and_cache writes whole rows.
"""
from __future__ import annotations


def kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int,
                   head_size: int, device_type: str = "cpu") -> tuple[int, int, int, int]:
    """Shape of one layer's key cache (the value cache has the same)."""
    for name, value in (("num_blocks", num_blocks), ("block_size", block_size),
                        ("num_kv_heads", num_kv_heads), ("head_size", head_size)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"no KV cache layout for device type {device_type!r}")
    return (num_blocks, num_kv_heads, block_size, head_size)
