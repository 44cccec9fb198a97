"""Marks for tests that need a GPU and a GPU build of vllm (skip otherwise),
and the random paged-cache cases the GPU attention tests share."""
import math

import pytest
import torch

import vllm
from vllm.attention.kv_cache_layout import kv_cache_shapes

GPU_TESTS = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
    pytest.mark.skipif(vllm.build_info().get("target_device") not in ("cuda", "rocm"),
                       reason="needs a CUDA or ROCm build of vllm"),
]


def paged_cache_case(num_kv_heads, head_size, block_size, lens, dtype):
    """A random CPU key/value cache holding sequences of the given lengths in
    shuffled blocks (a few spare), their block tables and lengths."""
    lens = torch.tensor(lens, dtype=torch.int32)
    max_blocks = math.ceil(int(lens.max()) / block_size)
    num_blocks = len(lens) * max_blocks + 3
    shapes = kv_cache_shapes(num_blocks, block_size, num_kv_heads, head_size, "cuda")
    kc, vc = torch.randn(shapes.key).to(dtype), torch.randn(shapes.value).to(dtype)
    tables = torch.randperm(num_blocks)[: len(lens) * max_blocks].reshape(len(lens), -1)
    return kc, vc, tables.to(torch.int32), lens
