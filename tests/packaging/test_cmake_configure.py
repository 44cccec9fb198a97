"""Configure-only CMake runs: each build variable's effect on the generated
build, and impossible settings failing at configure time."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import torch

from tests.utils import REPO_ROOT, clean_env, tool

pytestmark = pytest.mark.build


def configure(build_dir, **env) -> subprocess.CompletedProcess:
    cmd = [tool("cmake"), "-S", str(REPO_ROOT), "-B", str(build_dir), "-G", "Ninja",
           f"-DPython_EXECUTABLE={sys.executable}"]
    return subprocess.run(cmd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=300)


def cache_value(build_dir, name) -> str:
    text = (build_dir / "CMakeCache.txt").read_text()
    return re.search(rf"^{name}:\w+=(.*)$", text, re.M).group(1)


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a CPU-only torch")
def test_cuda_with_cpu_torch_fails_at_configure(tmp_path):
    proc = configure(tmp_path, VLLM_TARGET_DEVICE="cuda")
    assert proc.returncode != 0
    assert ("vllm build configuration error: VLLM_TARGET_DEVICE=cuda but the installed "
            f"torch {torch.__version__} has no CUDA support") in proc.stderr


def test_unknown_device_lists_accepted_values(tmp_path):
    proc = configure(tmp_path, VLLM_TARGET_DEVICE="gpu")
    assert proc.returncode != 0
    assert "VLLM_TARGET_DEVICE='gpu' is invalid" in proc.stderr
    assert "cuda | rocm | cpu | neuron | openvino | tpu | xpu | hpu" in proc.stderr


def test_pure_python_device_says_so(tmp_path):
    proc = configure(tmp_path, VLLM_TARGET_DEVICE="openvino")
    assert proc.returncode == 0, proc.stderr
    assert "no kernels are compiled" in proc.stdout
    assert not (tmp_path / "CMakeFiles" / "_C.dir").exists()


@pytest.mark.parametrize("value,expected", [(None, "RelWithDebInfo"), ("Debug", "Debug"),
                                            ("Release", "Release")])
def test_build_type(tmp_path, value, expected):
    env = {"VLLM_TARGET_DEVICE": "cpu"}
    if value:
        env["CMAKE_BUILD_TYPE"] = value
    proc = configure(tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    assert cache_value(tmp_path, "CMAKE_BUILD_TYPE") == expected
    # the default keeps line tables only (the installed module is stripped);
    # Debug keeps full debug info, Release none
    flags = set(re.findall(r"^\s*FLAGS = (.*)$", (tmp_path / "build.ninja").read_text(), re.M))
    assert flags, "no compile flags in build.ninja"
    debug = {"RelWithDebInfo": "-g1", "Debug": "-g", "Release": None}[expected]
    for line in flags:
        options = line.split()
        assert ([o for o in options if o.startswith("-g")] == ([debug] if debug else [])), line


def test_bad_build_type_fails_at_configure(tmp_path):
    proc = configure(tmp_path, CMAKE_BUILD_TYPE="Fastest")
    assert proc.returncode != 0
    assert "CMAKE_BUILD_TYPE='Fastest' is invalid" in proc.stderr


def test_jobs_become_ninja_pools(tmp_path):
    proc = configure(tmp_path, VLLM_TARGET_DEVICE="cpu", MAX_JOBS="3", NVCC_THREADS="2")
    assert proc.returncode == 0, proc.stderr
    rules = (tmp_path / "CMakeFiles" / "rules.ninja").read_text()
    rules += (tmp_path / "build.ninja").read_text()
    assert re.search(r"pool vllm_compile\s+depth = 3", rules)
    assert re.search(r"pool vllm_cuda\s+depth = 1", rules)
    assert "pool = vllm_compile" in (tmp_path / "build.ninja").read_text()


def test_detected_device_is_logged(tmp_path):
    proc = configure(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "VLLM_TARGET_DEVICE unset: building for" in proc.stdout


def test_cuda_arch_gating_per_source(tmp_path):
    script = tmp_path / "archs.cmake"
    script.write_text(f"""
include("{REPO_ROOT / 'cmake' / 'cuda_archs.cmake'}")
set(VLLM_CUDA_ARCHS 75-real 80-real 86 90a-real 100a-real)
vllm_cuda_archs(all)
vllm_cuda_archs(ampere_up MIN 8.0)
vllm_cuda_archs(hopper ONLY 90a)
vllm_cuda_archs(none ONLY 90a MIN 10.0)
message("all=${{all}}|ampere_up=${{ampere_up}}|hopper=${{hopper}}|none=${{none}}")
""")
    proc = subprocess.run([tool("cmake"), "-P", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ("all=75-real;80-real;86;90a-real;100a-real|"
                                   "ampere_up=80-real;86;90a-real;100a-real|"
                                   "hopper=90a-real|none=")


def test_isa_objects_share_no_weak_functions(tmp_path):
    """The AVX-512/AVX2 kernel objects must not emit weak (COMDAT) functions:
    the linker could hand such a copy, compiled with AVX-512, to baseline
    code. Checked on a Debug build, where nothing is inlined."""
    nm = shutil.which("nm")
    if not nm:
        pytest.skip("no nm")
    proc = configure(tmp_path, VLLM_TARGET_DEVICE="cpu", CMAKE_BUILD_TYPE="Debug")
    assert proc.returncode == 0, proc.stderr
    built = subprocess.run([tool("ninja"), "-C", str(tmp_path), "vllm_cpu_avx512",
                            "vllm_cpu_avx2"], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    objects = list(tmp_path.glob("CMakeFiles/vllm_cpu_avx*.dir/csrc/cpu/*.o"))
    assert len(objects) >= 4
    weak = []
    for obj in objects:
        symbols = subprocess.run([nm, "-C", str(obj)], capture_output=True, text=True).stdout
        weak += [f"{obj.name}: {line}" for line in symbols.splitlines()
                 if re.match(r"^[0-9a-f]* +[WV] ", line) and "DW.ref." not in line]
    assert weak == []
