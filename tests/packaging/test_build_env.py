"""cmake/build_env.py: how the installation-time variables are resolved, and
the one-line errors for impossible settings (run as the build runs it)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch

from tests.utils import REPO_ROOT, clean_env

BUILD_ENV = REPO_ROOT / "cmake" / "build_env.py"


def run_script(**env) -> subprocess.CompletedProcess:
    """The script exactly as the build runs it (its own interpreter)."""
    return subprocess.run([sys.executable, str(BUILD_ENV)], env=clean_env(**env),
                          capture_output=True, text=True, timeout=120)


def resolve(**env) -> subprocess.CompletedProcess:
    """The script's main() in this process, under the given environment: the
    same resolution without a 2 s interpreter and torch import per case
    (test_the_script_runs_as_the_build_runs_it covers the real invocation)."""
    build_env = _build_env_module()
    saved = os.environ.copy()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(clean_env(**env))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = build_env.main([])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess([str(BUILD_ENV)], code, out.getvalue(), err.getvalue())


def resolved(**env) -> dict:
    proc = resolve(**env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def error_line(**env) -> str:
    proc = resolve(**env)
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {proc.stderr}"
    return lines[0]


def test_the_script_runs_as_the_build_runs_it():
    proc = run_script(VLLM_TARGET_DEVICE="cpu", MAX_JOBS="3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["max_jobs"] == 3
    proc = run_script(MAX_JOBS="zero")
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vllm build configuration error:"), lines


def test_unset_device_is_detected_from_torch():
    config = resolved()
    assert config["device_detected"] is True
    expected = "cuda" if torch.version.cuda and config["nvcc"] else "cpu"
    if torch.version.hip:
        expected = "rocm"
    assert config["target_device"] == expected
    assert torch.__version__ in config["detection_reason"]


def test_cpu_version_suffix_and_defaults():
    config = resolved(VLLM_TARGET_DEVICE="cpu")
    assert config["version"].endswith("+cpu")
    assert config["build_type"] == "RelWithDebInfo"
    assert config["nvcc_threads"] == 1
    assert config["max_jobs"] >= 1
    assert config["torch"]["version"] == torch.__version__


@pytest.mark.parametrize("device", ["neuron", "openvino", "tpu", "xpu", "hpu"])
def test_pure_python_devices_get_their_suffix(device):
    config = resolved(VLLM_TARGET_DEVICE=device)
    assert config["version"].endswith(f"+{device}")


def test_jobs_rule():
    config = resolved(VLLM_TARGET_DEVICE="cpu", MAX_JOBS="8", NVCC_THREADS="3")
    assert (config["max_jobs"], config["nvcc_threads"], config["cuda_jobs"]) == (8, 3, 2)
    config = resolved(VLLM_TARGET_DEVICE="cpu", MAX_JOBS="2", NVCC_THREADS="8")
    assert config["cuda_jobs"] == 1  # never below one


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a CPU-only torch")
def test_cuda_with_cpu_torch_fails_in_one_line():
    line = error_line(VLLM_TARGET_DEVICE="cuda")
    assert "VLLM_TARGET_DEVICE=cuda" in line and torch.__version__ in line
    assert "install a CUDA build of torch" in line


@pytest.mark.skipif(torch.version.hip is not None, reason="needs a torch without HIP")
def test_rocm_with_non_hip_torch_fails_in_one_line():
    line = error_line(VLLM_TARGET_DEVICE="rocm")
    assert "VLLM_TARGET_DEVICE=rocm" in line and "no HIP support" in line


@pytest.mark.parametrize("env,needle", [
    ({"VLLM_TARGET_DEVICE": "gpu"}, "cuda | rocm | cpu | neuron | openvino | tpu | xpu | hpu"),
    ({"CMAKE_BUILD_TYPE": "Fast"}, "Debug | Release | RelWithDebInfo"),
    ({"MAX_JOBS": "zero"}, "MAX_JOBS"),
    ({"NVCC_THREADS": "0"}, "NVCC_THREADS"),
    ({"VERBOSE": "loud"}, "VERBOSE"),
    ({"VLLM_USE_PRECOMPILED": "1"}, "VLLM_PRECOMPILED_WHEEL_LOCATION is unset"),
])
def test_bad_settings_fail_in_one_line(env, needle):
    line = error_line(**env)
    assert line.startswith("vllm build configuration error:")
    assert needle in line


def test_cuda_arch_list_parsing():
    sys.path.insert(0, str(BUILD_ENV.parent))
    try:
        import build_env
    finally:
        sys.path.pop(0)
    assert build_env.parse_cuda_arch_list("8.0 9.0a") == ["80-real", "90a-real"]
    assert build_env.parse_cuda_arch_list("8.0;8.6+PTX") == ["80-real", "86"]
    with pytest.raises(build_env.BuildConfigError, match="TORCH_CUDA_ARCH_LIST"):
        build_env.parse_cuda_arch_list("sm_80")


def _fake_wheel(path, **info):
    record = {"version": "0.1.0+cpu", "target_device": "cpu",
              "torch_version": torch.__version__,
              "python_tag": f"cp{sys.version_info.major}{sys.version_info.minor}",
              "compiled_modules": ["_C"]}
    record.update(info)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("vllm/_build_info.json", json.dumps(record))
    return path


def test_precompiled_takes_device_from_the_wheel(tmp_path):
    wheel = _fake_wheel(tmp_path / "ok.whl")
    config = resolved(VLLM_USE_PRECOMPILED="1", VLLM_PRECOMPILED_WHEEL_LOCATION=str(wheel))
    assert config["precompiled_wheel"] == str(wheel)
    assert config["version"].endswith("+cpu")


@pytest.mark.parametrize("info,needles", [
    ({"torch_version": "2.14.1"}, ["torch 2.14.1 vs " + torch.__version__]),
    ({"python_tag": "cp39"}, ["Python cp39 vs cp"]),
])
def test_precompiled_mismatch_names_both_sides(tmp_path, info, needles):
    wheel = _fake_wheel(tmp_path / "bad.whl", **info)
    line = error_line(VLLM_PRECOMPILED_WHEEL_LOCATION=str(wheel))
    for needle in needles:
        assert needle in line


def test_precompiled_device_mismatch(tmp_path):
    wheel = _fake_wheel(tmp_path / "cpu.whl")
    line = error_line(VLLM_PRECOMPILED_WHEEL_LOCATION=str(wheel), VLLM_TARGET_DEVICE="cuda")
    assert "device cpu vs VLLM_TARGET_DEVICE=cuda" in line


def test_precompiled_rejects_foreign_files(tmp_path):
    junk = tmp_path / "junk.whl"
    junk.write_text("not a zip")
    assert "not a wheel built by this project" in error_line(
        VLLM_PRECOMPILED_WHEEL_LOCATION=str(junk))
    assert "does not exist" in error_line(
        VLLM_PRECOMPILED_WHEEL_LOCATION=str(tmp_path / "missing.whl"))


def test_precompiled_off_spellings_ignore_the_location(tmp_path):
    wheel = _fake_wheel(tmp_path / "ok.whl", torch_version="0.0.1")
    for off in ["0", "false", "no", ""]:
        config = resolved(VLLM_USE_PRECOMPILED=off, VLLM_PRECOMPILED_WHEEL_LOCATION=str(wheel),
                          VLLM_TARGET_DEVICE="cpu")
        assert config["precompiled_wheel"] is None


def _build_env_module():
    sys.path.insert(0, str(BUILD_ENV.parent))
    try:
        import build_env
    finally:
        sys.path.pop(0)
    return build_env


def test_cutlass_headers_from_a_local_checkout(tmp_path, monkeypatch):
    build_env = _build_env_module()
    (tmp_path / "include" / "cutlass").mkdir(parents=True)
    (tmp_path / "include" / "cutlass" / "cutlass.h").write_text("// header\n")
    monkeypatch.setenv("VLLM_CUTLASS_SRC_DIR", str(tmp_path))
    assert build_env.cutlass_include_dir(build_env.load_envs()) == str(tmp_path / "include")


def test_cutlass_checkout_without_headers_is_refused(tmp_path, monkeypatch):
    build_env = _build_env_module()
    monkeypatch.setenv("VLLM_CUTLASS_SRC_DIR", str(tmp_path))
    with pytest.raises(build_env.BuildConfigError, match="VLLM_CUTLASS_SRC_DIR"):
        build_env.cutlass_include_dir(build_env.load_envs())
