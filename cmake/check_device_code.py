"""Compile-check the GPU device code without torch or a GPU.

    python cmake/check_device_code.py cuda [--archs 80,90a]
    python cmake/check_device_code.py hip  [--archs gfx90a,gfx940]

Device code lives in torch-free .cu files, so nvcc (or, after torch's hipify,
hipcc) can compile each one on its own in seconds. CI runs both checks; a
full CUDA build needs a CUDA torch (README, "Building").
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cmake"))


def cuda_sources() -> list[Path]:
    return sorted((ROOT / "csrc").rglob("*.cu"))


def cuda_command(source: Path, out: Path, archs: list[str]) -> list[str]:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    return [nvcc, "-std=c++17", "-O2", "--expt-relaxed-constexpr", "-c", str(source),
            "-o", str(out), *gencode]


def hip_command(source: Path, out: Path, archs: list[str]) -> list[str]:
    hipcc = shutil.which("hipcc") or "/opt/rocm/bin/hipcc"
    offload = [f"--offload-arch={a}" for a in archs]
    return [hipcc, "-x", "hip", "-DUSE_ROCM", "-std=c++17", "-O2", "-fPIC", "-c", str(source),
            "-o", str(out), *offload]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["cuda", "hip"])
    parser.add_argument("--archs", help="comma-separated (cuda: 80,90a; hip: gfx90a)")
    args = parser.parse_args(argv)
    default = "80,90a" if args.kind == "cuda" else "gfx90a,gfx940"
    archs = [a for a in (args.archs or default).split(",") if a]
    work = Path(tempfile.mkdtemp(prefix=f"vllm-{args.kind}-check-"))
    env = dict(os.environ)
    if args.kind == "hip":
        import hipify_sources
        sources = hipify_sources.hipify(work / "hipified")
        env["HIP_PLATFORM"] = "amd"  # hipcc otherwise picks nvcc when it is installed
        command = hip_command
    else:
        sources = cuda_sources()
        command = cuda_command
    if not sources:
        print("no device code found", file=sys.stderr)
        return 1
    failed = 0
    for source in sources:
        start = time.perf_counter()
        proc = subprocess.run(command(source, work / (source.stem + ".o"), archs),
                              capture_output=True, text=True, env=env)
        status = "ok" if proc.returncode == 0 else "FAILED"
        print(f"{args.kind} {','.join(archs)} {source.relative_to(source.parents[1])}: "
              f"{status} ({time.perf_counter() - start:.1f} s)")
        if proc.returncode != 0:
            failed += 1
            print(proc.stdout + proc.stderr, file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    print(f"device code ({args.kind}): {len(sources) - failed} compiled, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
