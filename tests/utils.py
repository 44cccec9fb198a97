"""Helpers shared by the tests: the source tree, build tools, clean environments."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """A build tool from this interpreter's environment, else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found


def clean_env(**overrides: str) -> dict[str, str]:
    """os.environ without build/vLLM variables, plus the given overrides."""
    drop = ("VLLM_", "MAX_JOBS", "NVCC_THREADS", "CMAKE_BUILD_TYPE", "VERBOSE",
            "TORCH_CUDA_ARCH_LIST")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(overrides)
    return env
