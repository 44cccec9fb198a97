"""dtype="auto" follows the active CPU kernel variant, the same way for GGUF
(no dtype of its own) and safetensors checkpoints, and says why in the log;
a 16-bit model whose GEMMs would fall back to torch says so too."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from tests.kernels.isa import active_isa, cpu_isa  # noqa: F401  (fixture)
from vllm import _custom_ops as ops
from vllm.config import auto_dtype, resolve_dtype
from vllm.model_executor.layers import linear

# What each variant has: a packed bf16 GEMM (avx512 with BF16, avx2) or not.
EXPECTED = {"avx512": torch.bfloat16, "avx2": torch.bfloat16, "scalar": torch.float32}


@pytest.mark.parametrize("config_dtype", [None, torch.bfloat16, torch.float16, torch.float32])
def test_auto_follows_the_active_variant(cpu_isa, config_dtype, caplog):  # noqa: F811
    expected = EXPECTED[cpu_isa] if ops.packed_linear_available() or cpu_isa == "scalar" \
        else torch.float32  # an AVX-512 build whose compiler lacked BF16
    with caplog.at_level(logging.INFO, logger="vllm.config"):
        assert resolve_dtype("auto", config_dtype) == expected
    assert auto_dtype()[0] == expected
    line = " ".join(r.getMessage() for r in caplog.records)
    assert f"dtype auto -> {str(expected).replace('torch.', '')}" in line and cpu_isa in line


def test_explicit_dtype_is_kept_on_every_variant(cpu_isa):  # noqa: F811
    for name, dtype in [("float32", torch.float32), ("bfloat16", torch.bfloat16),
                        ("half", torch.float16)]:
        assert resolve_dtype(name, torch.bfloat16) == dtype


def test_forced_avx2_picks_what_an_avx2_cpu_would():
    """VLLM_CPU_ISA=avx2 in a fresh process: the engine's dtype and its log
    line are those of an AVX2 machine."""
    if "avx2" not in (ops._C.supported_cpu_isas().split(",") if ops._C is not None else []):
        pytest.skip("this CPU cannot run the AVX2 variant")
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from vllm import _custom_ops as ops\n"
            "from vllm.config import resolve_dtype\n"
            "print('ISA', ops.cpu_isa(), 'DTYPE', resolve_dtype('auto', None))\n")
    env = dict(os.environ, VLLM_CPU_ISA="avx2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert "ISA avx2 DTYPE torch.bfloat16" in out.stdout
    assert "the avx2 kernels run bf16 linear layers" in out.stderr + out.stdout


def test_torch_gemm_fallback_is_logged(caplog, monkeypatch):
    """On the scalar variant of a CPU without oneDNN's bf16 GEMM a bf16
    weight has no packed GEMM: the load says so (once per dtype)."""
    if ops._C is None:
        pytest.skip("no CPU kernels in this build")
    monkeypatch.setattr(linear, "_PACKED_ONEDNN", False)  # as on an AVX2 CPU
    linear._warned_torch_gemm.clear()
    # back to the variant active before, not "auto": a run forced to AVX2
    # (CI's VLLM_CPU_ISA=avx2 step) must stay on it for the tests after this
    try:
        with active_isa("scalar"), caplog.at_level(
                logging.WARNING, logger="vllm.model_executor.layers.linear"):
            for _ in range(2):
                linear.pack_weight(torch.zeros(96, 64, dtype=torch.bfloat16))
    finally:
        linear._warned_torch_gemm.clear()
    warnings = [r.getMessage() for r in caplog.records if "F.linear" in r.getMessage()]
    assert len(warnings) == 1 and "scalar" in warnings[0] and "bfloat16" in warnings[0]
