"""vllm.worker.gpu_planning from given numbers: the KV cache's blocks after
a profiling run, the refusal with the numbers when one max_model_len
sequence cannot fit, the 256-byte entry alignment, and the CUDA-graph
capture sizes and padding."""
from __future__ import annotations

import pytest

from vllm.worker.gpu_planning import (MemoryProfile, aligned_entry_elements, capture_sizes,
                                      check_gpu_memory_utilization, kv_cache_bytes,
                                      num_kv_blocks, padded_batch_size)

GIB = 1 << 30
# an H200-like device: 140 GiB; 16 GiB of weights, 2 GiB of activations, 1 GiB outside torch
PROFILE = MemoryProfile(total=140 * GIB, weights=16 * GIB, activation_peak=2 * GIB,
                        non_torch=1 * GIB)


def test_kv_cache_takes_what_the_rest_leaves():
    assert kv_cache_bytes(PROFILE, 0.9) == int(140 * GIB * 0.9) - 19 * GIB
    # a Llama-8B-like block: 32 layers x 2 x 8 KV heads x 128 dims x 16 tokens x 2 bytes
    block = 32 * 2 * 8 * 128 * 16 * 2
    blocks = num_kv_blocks(PROFILE, 0.9, block, 16, 8192)
    assert blocks == (int(140 * GIB * 0.9) - 19 * GIB) // block
    assert blocks * block <= kv_cache_bytes(PROFILE, 0.9) < (blocks + 1) * block


def test_no_room_is_refused_with_the_numbers():
    with pytest.raises(ValueError) as error:
        kv_cache_bytes(PROFILE, 0.1)  # 14 GiB < 19 GiB in use
    text = str(error.value)
    assert "gpu_memory_utilization 0.1 allows 14.00 GiB" in text
    assert "weights 16.00 GiB, activation peak 2.00 GiB, outside torch 1.00 GiB" in text


def test_a_sequence_that_cannot_fit_is_refused_with_the_numbers():
    small = MemoryProfile(total=24 * GIB, weights=20 * GIB, activation_peak=GIB // 2,
                          non_torch=GIB // 2)
    block = 1 << 20  # 1 MiB a block of 16 tokens
    with pytest.raises(ValueError) as error:
        num_kv_blocks(small, 0.9, block, 16, 32768)  # 0.6 GiB: 614 blocks < 2048 needed
    text = str(error.value)
    assert "fits 614 blocks of 16 tokens" in text and "needs (2048)" in text
    assert "lower max_model_len" in text
    assert num_kv_blocks(small, 0.9, block, 16, 4096) == 614


@pytest.mark.parametrize("value", [0, -0.1, 1.01, float("nan")])
def test_utilization_outside_its_range_is_refused(value):
    with pytest.raises(ValueError, match=r"gpu_memory_utilization must be in \(0, 1\]"):
        check_gpu_memory_utilization(value)


def test_entries_align_to_256_bytes():
    # DeepSeek's MLA latent: 512 + 64 values of 2 bytes = 1152 bytes -> 1280
    assert aligned_entry_elements(576, 2, align=True) == 640
    assert aligned_entry_elements(576, 2, align=False) == 576
    assert aligned_entry_elements(128, 2, align=True) == 128  # 256 bytes already
    assert aligned_entry_elements(65, 4, align=True) == 128


def test_capture_sizes_and_padding():
    sizes = capture_sizes(128)
    assert sizes == sorted(sizes, reverse=True)  # largest first: one pool
    assert sorted(sizes) == [1, 2, 4] + list(range(8, 129, 8))
    assert sorted(capture_sizes(20)) == [1, 2, 4, 8, 16, 20]  # max_num_seqs itself too
    assert capture_sizes(3) == [3, 2, 1]
    assert [padded_batch_size(n, sizes) for n in (1, 3, 5, 8, 9, 127, 128)] == \
        [1, 4, 8, 8, 16, 128, 128]
    assert padded_batch_size(129, sizes) is None  # larger than any: eager
    with pytest.raises(ValueError):
        capture_sizes(0)
