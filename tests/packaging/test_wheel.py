"""Real pip builds: job cap, verbosity, no-op rebuilds, pure-Python devices,
and reinstalling from a precompiled wheel with no compiler at all."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

from tests.utils import REPO_ROOT, clean_env, tool

pytestmark = pytest.mark.build
WHEEL_TAG = (f"cp{sys.version_info.major}{sys.version_info.minor}-"
             f"cp{sys.version_info.major}{sys.version_info.minor}-"
             f"{sysconfig.get_platform().replace('-', '_').replace('.', '_')}")


def pip_wheel(out_dir: Path, build_dir: Path | None = None, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-build-isolation", "--no-deps",
           "-w", str(out_dir), str(REPO_ROOT)]
    if build_dir is not None:
        cmd.append(f"--config-settings=build-dir={build_dir}")
    # One stream: pip interleaves the backend's stdout and stderr.
    return subprocess.run(cmd, env=clean_env(**env), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)


def only_wheel(out_dir: Path) -> Path:
    wheels = list(out_dir.glob("vllm-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def ninja_intervals(build_dir: Path) -> list[tuple[int, int]]:
    rows = (build_dir / ".ninja_log").read_text().splitlines()[1:]
    return [(int(r.split("\t")[0]), int(r.split("\t")[1])) for r in rows if r.strip()]


@pytest.fixture(scope="module")
def serial_verbose_build(tmp_path_factory):
    """One full build with MAX_JOBS=1 VERBOSE=1, shared by the tests of the
    job cap and of both verbosities; Debug (-O0): 90 s instead of 190 s
    serial on 2 cores, and optimisation plays no part in what they check."""
    tmp = tmp_path_factory.mktemp("serial")
    build = tmp / "build"
    proc = pip_wheel(tmp / "dist", build, VLLM_TARGET_DEVICE="cpu", MAX_JOBS="1", VERBOSE="1",
                     CMAKE_BUILD_TYPE="Debug")
    assert proc.returncode == 0, proc.stdout[-5000:]
    return tmp, build, proc


@pytest.mark.slow
def test_max_jobs_1_builds_one_job_at_a_time_verbose(serial_verbose_build):
    _, build, proc = serial_verbose_build
    spans = sorted(ninja_intervals(build))
    assert len(spans) >= 8
    overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
    assert overlaps == [], f"jobs ran concurrently with MAX_JOBS=1: {overlaps}"
    # VERBOSE=1: full compiler command lines in the log
    log = proc.stdout
    assert "-mavx512f" in log and "-mavx2" in log


@pytest.mark.slow
def test_verbose_0_keeps_command_lines_out(serial_verbose_build):
    # The same build folder with one AVX-512 object removed: a VERBOSE=0
    # build compiles it again and names it, without its command line.
    tmp, build, _ = serial_verbose_build
    objects = list(build.glob("CMakeFiles/vllm_cpu_avx512.dir/csrc/cpu/*.o"))
    assert objects, "no AVX-512 kernel objects in the build folder"
    objects[0].unlink()
    proc = pip_wheel(tmp / "dist0", build, VLLM_TARGET_DEVICE="cpu", VERBOSE="0",
                     CMAKE_BUILD_TYPE="Debug")
    assert proc.returncode == 0, proc.stdout[-5000:]
    log = proc.stdout
    assert "Building CXX object" in log and objects[0].name in log
    assert "-mavx512f" not in log


def test_rebuild_with_nothing_changed_does_no_work():
    build = REPO_ROOT / "build" / WHEEL_TAG
    if not (build / "build.ninja").exists():
        pytest.skip("no persistent build dir: install the project first")
    proc = subprocess.run([tool("cmake"), "--build", str(build)], capture_output=True,
                          text=True, timeout=300, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert "no work to do" in proc.stdout


def test_openvino_gives_a_pure_python_package(tmp_path):
    proc = pip_wheel(tmp_path / "dist", tmp_path / "build", VLLM_TARGET_DEVICE="openvino")
    assert proc.returncode == 0, proc.stdout[-5000:]
    wheel = only_wheel(tmp_path / "dist")
    assert "+openvino" in wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = json.loads(archive.read("vllm/_build_info.json"))
    assert not [n for n in names if n.endswith(".so")]
    assert info["target_device"] == "openvino" and info["compiled_modules"] == []
    assert "no kernels are compiled" in proc.stdout


@pytest.fixture(scope="module")
def source_wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("src-dist")
    proc = pip_wheel(out, VLLM_TARGET_DEVICE="cpu")  # the persistent build dir
    assert proc.returncode == 0, proc.stdout[-5000:]
    return only_wheel(out)


def _so_digests(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n: hashlib.sha256(archive.read(n)).hexdigest()
                for n in archive.namelist() if n.endswith(".so")}


def test_precompiled_reinstall_needs_no_compiler(tmp_path, source_wheel):
    proc = pip_wheel(tmp_path / "dist", tmp_path / "build", VLLM_USE_PRECOMPILED="1",
                     VLLM_PRECOMPILED_WHEEL_LOCATION=str(source_wheel), CC="false",
                     CXX="false", CUDACXX="false")
    assert proc.returncode == 0, proc.stdout[-5000:]
    wheel = only_wheel(tmp_path / "dist")
    assert "+cpu" in wheel.name
    assert _so_digests(wheel) == _so_digests(source_wheel) != {}
    with zipfile.ZipFile(wheel) as archive:
        info = json.loads(archive.read("vllm/_build_info.json"))
        archive.extractall(tmp_path / "site")
    assert info["precompiled_from"] == source_wheel.name
    # The reused modules work: import from the unpacked wheel and run an op.
    code = ("import vllm, torch; from vllm import _custom_ops as ops; "
            "x = torch.randn(3, 64); o = torch.empty_like(x); "
            "ops.rms_norm(o, x, torch.ones(64), 1e-5); "
            "print(vllm.__file__, vllm.__version__, bool(torch.isfinite(o).all()))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=clean_env(PYTHONPATH=str(tmp_path / "site")), timeout=120)
    assert run.returncode == 0, run.stderr
    path, version, finite = run.stdout.split()
    assert path.startswith(str(tmp_path / "site")) and version.endswith("+cpu")
    assert finite == "True"


def test_precompiled_refuses_a_wheel_for_another_torch(tmp_path, source_wheel):
    foreign = tmp_path / source_wheel.name
    with zipfile.ZipFile(source_wheel) as src, zipfile.ZipFile(foreign, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "vllm/_build_info.json":
                record = json.loads(data)
                record["torch_version"] = "2.14.1"
                data = json.dumps(record).encode()
            dst.writestr(item, data)
    proc = pip_wheel(tmp_path / "dist", tmp_path / "build",
                     VLLM_PRECOMPILED_WHEEL_LOCATION=str(foreign), CC="false", CXX="false")
    assert proc.returncode != 0
    output = proc.stdout
    assert f"torch 2.14.1 vs {torch.__version__}" in output
