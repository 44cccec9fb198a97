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


@pytest.mark.slow  # CI's own step compiles the same (cmake/check_device_code.py)
@pytest.mark.skipif(not _has("nvcc", "/usr/local/cuda/bin/nvcc"), reason="no nvcc")
def test_cuda_device_code_compiles_for_sm80_and_sm90a():
    proc = subprocess.run([sys.executable, str(CHECK), "cuda", "--archs", "80,90a"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout and "layernorm_kernels.cu: ok" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not _has("hipcc", "/opt/rocm/bin/hipcc"), reason="no hipcc")
def test_hipified_device_code_compiles_for_gfx90a():
    proc = subprocess.run([sys.executable, str(CHECK), "hip", "--archs", "gfx90a"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "layernorm_kernels.hip: ok" in proc.stdout


TRITON_COMPILE = """
import sys
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, compile
from vllm.triton_ops.paged_decode_attention import _paged_decode_kernel as kernel
ptr, idx = "*bf16", "i64"
signature = dict(out_ptr=ptr, q_ptr=ptr, k_cache_ptr=ptr, v_cache_ptr=ptr,
                 block_tables_ptr="*i32", seq_lens_ptr="*i32", alibi_ptr=ptr, scale="fp32",
                 stride_q_token=idx, stride_o_token=idx, stride_bt_seq=idx, stride_k_block=idx,
                 stride_k_head=idx, stride_v_block=idx, stride_v_head=idx)
constants = dict(GROUP=3, GROUP_PAD=16, HEAD_SIZE=64, HEAD_PAD=64, BLOCK_SIZE=16,
                 HAS_ALIBI=False, UPCAST=False)
signature.update({name: "constexpr" for name in constants})
for arch in (80, 90):
    binary = compile(ASTSource(fn=kernel, signature=signature, constexprs=constants),
                     target=GPUTarget("cuda", arch, 32))
    print(arch, len(binary.asm["cubin"]))
"""


def test_triton_decode_kernel_compiles_for_sm80_and_sm90():
    pytest.importorskip("triton")
    env = clean_env(TRITON_DEFAULT_FP_FUSION="1")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", TRITON_COMPILE], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sizes = dict(line.split() for line in proc.stdout.splitlines())
    assert set(sizes) == {"80", "90"} and all(int(n) > 1000 for n in sizes.values())
