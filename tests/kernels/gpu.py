"""Marks for tests that need a GPU and a GPU build of vllm (skip otherwise)."""
import pytest
import torch

import vllm

GPU_TESTS = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
    pytest.mark.skipif(vllm.build_info().get("target_device") not in ("cuda", "rocm"),
                       reason="needs a CUDA or ROCm build of vllm"),
]
