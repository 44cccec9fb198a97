"""What a GPU worker decides before it serves, as plain arithmetic on
numbers it measured (so it is tested without a GPU):

- the KV cache's size: `gpu_memory_utilization` of the device's memory,
  less the weights, the activation peak of a profiling forward at
  max_num_batched_tokens and the memory outside torch's allocator (CUDA
  context, communication buffers), divided by the bytes of one block; a
  cache that cannot hold one max_model_len sequence refuses to start,
  with the numbers;
- a KV entry's padding (VLLM_CUDA_MEM_ALIGN_KV_CACHE: 256-byte entries);
- the decode batch sizes captured as CUDA graphs (1, 2, 4, then every 8 up
  to max_num_seqs, which is captured too so every decode batch pads to a
  captured size), captured largest first into one memory pool.
"""
from __future__ import annotations

from dataclasses import dataclass

_GIB = 1 << 30
KV_ENTRY_ALIGN_BYTES = 256


def check_gpu_memory_utilization(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {value} (the fraction "
                         "of the GPU's memory this engine may use)")
    return value


@dataclass(frozen=True)
class MemoryProfile:
    """Bytes, measured by the worker after loading the weights and running
    one profiling forward."""
    total: int  # the device's memory
    weights: int
    activation_peak: int  # the profiling forward's peak above the weights
    non_torch: int  # in use outside torch's allocator

    def describe(self) -> str:
        return (f"{self.total / _GIB:.2f} GiB on the device, weights {self.weights / _GIB:.2f} "
                f"GiB, activation peak {self.activation_peak / _GIB:.2f} GiB, outside torch "
                f"{self.non_torch / _GIB:.2f} GiB")


def kv_cache_bytes(profile: MemoryProfile, utilization: float) -> int:
    """What the KV cache may take: utilization x total, less everything else."""
    check_gpu_memory_utilization(utilization)
    budget = int(profile.total * utilization)
    left = budget - profile.weights - profile.activation_peak - profile.non_torch
    if left <= 0:
        raise ValueError(f"no GPU memory is left for the KV cache: gpu_memory_utilization "
                         f"{utilization} allows {budget / _GIB:.2f} GiB of "
                         f"{profile.describe()}; raise gpu_memory_utilization, lower "
                         "max_num_batched_tokens or use a smaller model")
    return left


def aligned_entry_elements(elements: int, element_bytes: int, align: bool) -> int:
    """One token's KV entry (per layer) in elements, padded to a multiple of
    256 bytes when `align` (VLLM_CUDA_MEM_ALIGN_KV_CACHE)."""
    if not align:
        return elements
    unit = max(1, KV_ENTRY_ALIGN_BYTES // element_bytes)
    return -(-elements // unit) * unit


def num_kv_blocks(profile: MemoryProfile, utilization: float, block_bytes: int,
                  block_size: int, max_model_len: int) -> int:
    """Blocks the cache holds; ValueError with the numbers when one
    max_model_len sequence does not fit."""
    space = kv_cache_bytes(profile, utilization)
    blocks = space // block_bytes
    needed = -(-max_model_len // block_size)
    if blocks < needed:
        raise ValueError(f"the KV cache fits {blocks} blocks of {block_size} tokens "
                         f"({space / _GIB:.2f} GiB, {block_bytes} bytes a block), fewer than "
                         f"one max_model_len={max_model_len} sequence needs ({needed}); "
                         f"{profile.describe()}: lower max_model_len or raise "
                         "gpu_memory_utilization")
    return blocks


def capture_sizes(max_num_seqs: int) -> list[int]:
    """Decode batch sizes to capture, largest first (later, smaller graphs
    reuse the first one's memory pool)."""
    if max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be at least 1, got {max_num_seqs}")
    sizes = {s for s in (1, 2, 4) if s <= max_num_seqs}
    sizes.update(range(8, max_num_seqs + 1, 8))
    sizes.add(max_num_seqs)
    return sorted(sizes, reverse=True)


def padded_batch_size(num_seqs: int, sizes: list[int]) -> int | None:
    """The captured size a decode batch of num_seqs pads to (None: larger
    than any, run eagerly)."""
    fitting = [s for s in sizes if s >= num_seqs]
    return min(fitting) if fitting else None
