"""Resolve the installation-time settings once, for packaging and for CMake.

Both consumers call ``resolve()``: the scikit-build-core metadata provider
(``vllm_build_meta.py``, for the version suffix and the torch pin) and
``CMakeLists.txt`` (``python cmake/build_env.py cmake OUT``, which writes the
settings as a CMake script). The variables themselves are parsed by
``python/vllm/envs.py``, loaded here by path, so the build and the runtime
agree on every spelling. A bad setting raises ``BuildConfigError`` whose
message is one line naming the variable, what was found and the fix.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

BASE_VERSION = "0.1.0"
ROOT = Path(__file__).resolve().parent.parent
BUILD_INFO_NAME = "vllm/_build_info.json"
DEFAULT_CUDA_ARCHS = "7.5 8.0 8.6 8.9 9.0a 10.0 12.0"
DEFAULT_ROCM_ARCHS = "gfx90a;gfx942"
PURE_PYTHON_DEVICES = ("neuron", "openvino", "tpu", "xpu", "hpu")


class BuildConfigError(Exception):
    """An impossible or malformed build setting; str() is the one-line fix."""


def load_envs():
    """vllm/envs.py from the source tree, without importing the package."""
    spec = importlib.util.spec_from_file_location(
        "_vllm_build_envs", ROOT / "python" / "vllm" / "envs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@dataclass
class TorchInfo:
    version: str
    cuda: Optional[str]
    hip: Optional[str]
    cmake_prefix: str
    cxx11_abi: bool


@dataclass
class BuildConfig:
    target_device: str
    device_detected: bool
    detection_reason: str
    build_type: str
    max_jobs: int
    nvcc_threads: int
    cuda_jobs: int
    verbose: bool
    python_tag: str
    torch: Optional[TorchInfo]
    precompiled_wheel: Optional[str] = None
    # CMake CUDA_ARCHITECTURES for cuda, gfx targets for rocm.
    cuda_archs: list[str] = field(default_factory=list)
    nvcc: Optional[str] = None
    cutlass_include: Optional[str] = None

    @property
    def version_suffix(self) -> str:
        if self.target_device == "cpu":
            return "cpu"
        if self.target_device == "cuda":
            return "cu" + _digits(self.torch.cuda)
        if self.target_device == "rocm":
            return "rocm" + _digits(self.torch.hip, parts=2)
        return self.target_device

    @property
    def version(self) -> str:
        return f"{BASE_VERSION}+{self.version_suffix}"

    @property
    def compiles_kernels(self) -> bool:
        return (self.precompiled_wheel is None
                and self.target_device not in PURE_PYTHON_DEVICES)


def _digits(version: Optional[str], parts: int = 2) -> str:
    return "".join(re.findall(r"\d+", version or "")[:parts])


def _probe_torch() -> Optional[TorchInfo]:
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "numpy not installed"
            import torch
            import torch.utils
    except ImportError:
        return None
    return TorchInfo(version=torch.__version__,
                     cuda=torch.version.cuda,
                     hip=getattr(torch.version, "hip", None),
                     cmake_prefix=torch.utils.cmake_prefix_path,
                     cxx11_abi=bool(torch._C._GLIBCXX_USE_CXX11_ABI))


def _find_nvcc(envs) -> Optional[str]:
    cuda_home = envs.CUDA_HOME
    if cuda_home:
        candidate = Path(cuda_home) / "bin" / "nvcc"
        return str(candidate) if candidate.exists() else None
    return shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc"
        if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def _cpus_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _read(envs, name: str):
    try:
        return getattr(envs, name)
    except ValueError as exc:
        raise BuildConfigError(str(exc)) from None


def _choose_device(envs, torch_info, nvcc) -> tuple[str, bool, str]:
    if envs.is_set("VLLM_TARGET_DEVICE"):
        return _read(envs, "VLLM_TARGET_DEVICE"), False, "set explicitly"
    if torch_info is None:
        return "cpu", True, "torch is not installed"
    if torch_info.hip:
        return "rocm", True, f"torch {torch_info.version} is a HIP build"
    if torch_info.cuda and nvcc:
        return "cuda", True, (f"torch {torch_info.version} is built with CUDA "
                              f"{torch_info.cuda} and nvcc is at {nvcc}")
    if torch_info.cuda:
        return "cpu", True, (f"torch {torch_info.version} has CUDA but no nvcc "
                             "was found (set CUDA_HOME to build for CUDA)")
    return "cpu", True, f"torch {torch_info.version} is a CPU build"


def _check_device_against_torch(device: str, torch_info, nvcc) -> None:
    if device in PURE_PYTHON_DEVICES:
        return
    if torch_info is None:
        raise BuildConfigError(
            f"VLLM_TARGET_DEVICE={device} needs torch in the build environment "
            "but none is installed; install torch first (pip install "
            "torch==2.13.0 for CPU) and build with --no-build-isolation")
    if device == "cuda" and not torch_info.cuda:
        raise BuildConfigError(
            f"VLLM_TARGET_DEVICE=cuda but the installed torch "
            f"{torch_info.version} has no CUDA support; install a CUDA build "
            "of torch (e.g. pip install torch==2.14.1) or set "
            "VLLM_TARGET_DEVICE=cpu")
    if device == "cuda" and not nvcc:
        raise BuildConfigError(
            "VLLM_TARGET_DEVICE=cuda but no nvcc was found; install the CUDA "
            "toolkit and set CUDA_HOME to its root, or set "
            "VLLM_TARGET_DEVICE=cpu")
    if device == "rocm" and not torch_info.hip:
        raise BuildConfigError(
            f"VLLM_TARGET_DEVICE=rocm but the installed torch "
            f"{torch_info.version} has no HIP support; install a ROCm build "
            "of torch or set VLLM_TARGET_DEVICE=cpu")


def parse_cuda_arch_list(text: str) -> list[str]:
    """'8.0 9.0a+PTX' -> CMake CUDA_ARCHITECTURES ['80-real', '90a']."""
    archs = []
    for item in re.split(r"[;\s,]+", text.strip()):
        if not item:
            continue
        match = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", item)
        if not match:
            raise BuildConfigError(
                f"TORCH_CUDA_ARCH_LIST={text!r} has {item!r}, which is not an "
                "arch; accepted: entries like 8.0, 9.0a, 8.6+PTX separated by "
                "';' or spaces")
        major, minor, suffix, ptx = match.groups()
        code = f"{major}{minor}{suffix}"
        archs.append(code if ptx else f"{code}-real")
    if not archs:
        raise BuildConfigError(
            "TORCH_CUDA_ARCH_LIST is empty; accepted: entries like 8.0 9.0a")
    return archs


def _python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def read_wheel_build_info(wheel: str) -> dict:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return json.loads(archive.read(BUILD_INFO_NAME))
    except FileNotFoundError:
        raise BuildConfigError(
            f"VLLM_PRECOMPILED_WHEEL_LOCATION={wheel} does not exist; point it "
            "at a wheel this project built (pip wheel . -w dist)") from None
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        raise BuildConfigError(
            f"VLLM_PRECOMPILED_WHEEL_LOCATION={wheel} is not a wheel built by "
            f"this project (no readable {BUILD_INFO_NAME} inside)") from None


def _check_precompiled(wheel: str, envs, torch_info) -> dict:
    info = read_wheel_build_info(wheel)
    here_torch = torch_info.version if torch_info else "none"
    mismatches = []
    if info.get("torch_version") != here_torch:
        mismatches.append(f"torch {info.get('torch_version')} vs {here_torch}")
    if info.get("python_tag") != _python_tag():
        mismatches.append(
            f"Python {info.get('python_tag')} vs {_python_tag()}")
    if (envs.is_set("VLLM_TARGET_DEVICE")
            and _read(envs, "VLLM_TARGET_DEVICE") != info.get("target_device")):
        mismatches.append(f"device {info.get('target_device')} vs "
                          f"VLLM_TARGET_DEVICE={envs.VLLM_TARGET_DEVICE}")
    if mismatches:
        raise BuildConfigError(
            f"VLLM_USE_PRECOMPILED: the wheel {Path(wheel).name} does not fit "
            f"this environment (wheel vs here: {'; '.join(mismatches)}); "
            "install the matching torch/Python or build from source without "
            "VLLM_USE_PRECOMPILED")
    return info


def resolve() -> BuildConfig:
    envs = load_envs()
    torch_info = _probe_torch()
    nvcc = _find_nvcc(envs)
    build_type = _read(envs, "CMAKE_BUILD_TYPE") or "RelWithDebInfo"
    max_jobs = _read(envs, "MAX_JOBS") or _cpus_available()
    nvcc_threads = _read(envs, "NVCC_THREADS") or 1
    common = dict(build_type=build_type, max_jobs=max_jobs,
                  nvcc_threads=nvcc_threads,
                  cuda_jobs=max(1, max_jobs // nvcc_threads),
                  verbose=_read(envs, "VERBOSE"), python_tag=_python_tag(),
                  torch=torch_info, nvcc=nvcc)

    if _read(envs, "VLLM_USE_PRECOMPILED"):
        wheel = _read(envs, "VLLM_PRECOMPILED_WHEEL_LOCATION")
        if not wheel:
            raise BuildConfigError(
                "VLLM_USE_PRECOMPILED is on but VLLM_PRECOMPILED_WHEEL_LOCATION "
                "is unset; set it to the path of a wheel this project built "
                "(nothing is downloaded)")
        info = _check_precompiled(wheel, envs, torch_info)
        return BuildConfig(target_device=info["target_device"],
                           device_detected=False,
                           detection_reason=f"taken from {Path(wheel).name}",
                           precompiled_wheel=str(Path(wheel).resolve()),
                           cuda_archs=info.get("cuda_archs", []), **common)

    device, detected, reason = _choose_device(envs, torch_info, nvcc)
    _check_device_against_torch(device, torch_info, nvcc)
    archs = []
    if device == "cuda":
        archs = parse_cuda_arch_list(
            _read(envs, "TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCHS)
    elif device == "rocm":
        archs = [a for a in re.split(r"[;\s,]+",
                                     _read(envs, "PYTORCH_ROCM_ARCH") or DEFAULT_ROCM_ARCHS)
                 if a]
    cutlass = cutlass_include_dir(envs) if device == "cuda" else None
    return BuildConfig(target_device=device, device_detected=detected,
                       detection_reason=reason, cuda_archs=archs,
                       cutlass_include=cutlass, **common)


def _cmake_quote(value) -> str:
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    if isinstance(value, (list, tuple)):
        value = ";".join(str(v) for v in value)
    text = str(value).replace("\\", "/").replace('"', '\\"')
    return f'"{text}"'


def write_cmake(config: BuildConfig, out: Path) -> None:
    torch_info = config.torch
    values = {
        "VLLM_TARGET_DEVICE": config.target_device,
        "VLLM_DEVICE_DETECTED": config.device_detected,
        "VLLM_DEVICE_REASON": config.detection_reason,
        "VLLM_BUILD_TYPE": config.build_type,
        "VLLM_MAX_JOBS": config.max_jobs,
        "VLLM_NVCC_THREADS": config.nvcc_threads,
        "VLLM_CUDA_JOBS": config.cuda_jobs,
        "VLLM_VERBOSE": config.verbose,
        "VLLM_PYTHON_TAG": config.python_tag,
        "VLLM_VERSION": config.version,
        "VLLM_COMPILES_KERNELS": config.compiles_kernels,
        "VLLM_PRECOMPILED_WHEEL": config.precompiled_wheel or "",
        "VLLM_TORCH_VERSION": torch_info.version if torch_info else "",
        "VLLM_TORCH_CMAKE_PREFIX": torch_info.cmake_prefix if torch_info else "",
        "VLLM_TORCH_CUDA_VERSION": (torch_info.cuda or "") if torch_info else "",
        "VLLM_CUDA_ARCHS": config.cuda_archs if config.target_device == "cuda" else [],
        "VLLM_HIP_ARCHS": config.cuda_archs if config.target_device == "rocm" else [],
        "VLLM_NVCC": config.nvcc or "",
        "VLLM_CUTLASS_DIR": config.cutlass_include or "",
    }
    lines = [f"set({key} {_cmake_quote(val)})" for key, val in values.items()]
    out.write_text("\n".join(lines) + "\n")


def cutlass_include_dir(envs) -> Optional[str]:
    """CUTLASS headers: VLLM_CUTLASS_SRC_DIR, else the nvidia-cutlass wheel's
    copy (cutlass_library/source/include), else None. Never downloads."""
    local = _read(envs, "VLLM_CUTLASS_SRC_DIR")
    if local:
        include = Path(local) / "include"
        if not (include / "cutlass" / "cutlass.h").exists():
            raise BuildConfigError(
                f"VLLM_CUTLASS_SRC_DIR={local} has no include/cutlass/cutlass.h;"
                " point it at a CUTLASS checkout")
        return str(include)
    spec = importlib.util.find_spec("cutlass_library")
    if spec and spec.submodule_search_locations:
        include = Path(list(spec.submodule_search_locations)[0]) / "source" / "include"
        if (include / "cutlass" / "cutlass.h").exists():
            return str(include)
    return None


def describe(config: BuildConfig) -> dict:
    data = asdict(config)
    data["version"] = config.version
    return data


def main(argv: list[str]) -> int:
    try:
        config = resolve()
        if argv[:1] == ["cmake"] and len(argv) == 2:
            write_cmake(config, Path(argv[1]))
        else:
            print(json.dumps(describe(config), indent=2))
    except BuildConfigError as exc:
        print(f"vllm build configuration error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
