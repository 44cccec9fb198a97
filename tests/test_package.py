"""The installed package: version, build record, CLI, kernel-variant choice,
and the clear refusal of a torch other than the one it was built against."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vllm
from tests.utils import clean_env

COMPILED = bool(vllm.build_info().get("compiled_modules"))


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(**env), timeout=120)


def test_version_carries_the_device_suffix():
    info = vllm.build_info()
    assert info, "vllm/_build_info.json is missing: is the package installed?"
    assert vllm.__version__ == info["version"]
    suffix = {"cpu": "+cpu", "cuda": "+cu", "rocm": "+rocm"}.get(
        info["target_device"], "+" + info["target_device"])
    assert suffix in vllm.__version__


def test_build_record_describes_this_build():
    info = vllm.build_info()
    assert info["torch_version"] == torch.__version__
    assert info["python_tag"] == f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert info["build_type"] in ("Debug", "Release", "RelWithDebInfo")
    if info["target_device"] == "cpu":
        assert {"avx2", "scalar"} <= set(info["cpu_isa_variants"])
        assert any(v.startswith("avx512") for v in info["cpu_isa_variants"])


@pytest.mark.skipif(not COMPILED, reason="pure-Python build")
def test_import_vllm_C_alone_works():
    proc = run_python("import vllm._C, torch; print(torch.ops._C.rms_norm)")
    assert proc.returncode == 0, proc.stderr


def test_cli_version_and_collect_env():
    exe = Path(sys.executable).parent / "vllm"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == vllm.__version__
    out = subprocess.run([str(exe), "--version", "--verbose"], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.split("\n", 1)[1]) == vllm.build_info()
    proc = subprocess.run([sys.executable, "-m", "vllm.collect_env"], capture_output=True,
                          text=True, check=True)
    report = json.loads(proc.stdout)
    assert report["build"] == vllm.build_info()
    assert report["runtime"]["torch"] == torch.__version__


@pytest.mark.skipif(not COMPILED, reason="pure-Python build")
def test_mismatched_torch_fails_naming_both_versions(tmp_path):
    package = Path(vllm.__file__).parent
    copy = tmp_path / "vllm"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    record = json.loads((copy / "_build_info.json").read_text())
    record["torch_version"] = "2.99.0+cu999"
    (copy / "_build_info.json").write_text(json.dumps(record))
    proc = run_python("import vllm._C", PYTHONPATH=str(tmp_path))
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "undefined symbol" not in proc.stderr
    assert "2.99.0+cu999" in proc.stderr and torch.__version__ in proc.stderr


@pytest.mark.skipif(not COMPILED or vllm.build_info()["target_device"] != "cpu",
                    reason="CPU kernels only")
@pytest.mark.parametrize("isa", ["avx2", "scalar"])
def test_vllm_cpu_isa_forces_a_variant(isa):
    proc = run_python("from vllm import _custom_ops as ops; print(ops.cpu_isa())",
                      VLLM_CPU_ISA=isa)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == isa


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not COMPILED or vllm.build_info()["target_device"] != "cpu",
                    reason="CPU kernels only")
@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs /proc/cpuinfo")
def test_auto_picks_the_best_variant_the_cpu_has():
    """Expected variant from the kernel's own CPU flags, not from vllm."""
    from vllm import _custom_ops as ops
    flags = _cpu_flags()
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"}
    if "avx512+bf16+vnni" in vllm.build_info()["cpu_isa_variants"]:
        avx512 |= {"avx512_bf16", "avx512_vnni"}
    if avx512 <= flags:
        expected = "avx512"
    elif {"avx2", "fma", "f16c"} <= flags:
        expected = "avx2"
    else:
        expected = "scalar"
    assert ops.cpu_isa() == expected
    assert ops._C.supported_cpu_isas().split(",")[0] == expected


def test_unknown_vllm_variable_warns_at_import():
    proc = run_python("import vllm", VLLM_ATENTION_BACKEND="TORCH_SDPA")
    assert proc.returncode == 0, proc.stderr
    assert "VLLM_ATENTION_BACKEND" in proc.stderr and "VLLM_ATTENTION_BACKEND" in proc.stderr
