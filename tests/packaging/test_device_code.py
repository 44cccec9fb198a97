"""GPU device code compiles for the CI archs without torch or a GPU: CUDA
with nvcc (sm_80, sm_90a), HIP after torch's hipify with hipcc (gfx90a)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils import REPO_ROOT, clean_env

pytestmark = pytest.mark.build
CHECK = REPO_ROOT / "cmake" / "check_device_code.py"


def _has(tool: str, fallback: str) -> bool:
    return bool(shutil.which(tool)) or Path(fallback).exists()


@pytest.mark.skipif(not _has("nvcc", "/usr/local/cuda/bin/nvcc"), reason="no nvcc")
def test_cuda_device_code_compiles_for_sm80_and_sm90a():
    proc = subprocess.run([sys.executable, str(CHECK), "cuda", "--archs", "80,90a"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout and "layernorm_kernels.cu: ok" in proc.stdout


@pytest.mark.skipif(not _has("hipcc", "/opt/rocm/bin/hipcc"), reason="no hipcc")
def test_hipified_device_code_compiles_for_gfx90a():
    proc = subprocess.run([sys.executable, str(CHECK), "hip", "--archs", "gfx90a"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "layernorm_kernels.hip: ok" in proc.stdout
