"""Hipify the CUDA sources with torch's hipify, for ROCm builds and checks.

usage: python cmake/hipify_sources.py OUT_DIR
Copies csrc/ into OUT_DIR translated to HIP (.cu -> .hip) and prints the
translated device-code files, one per line.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def hipify(out_dir: Path) -> list[Path]:
    from torch.utils.hipify.hipify_python import hipify as torch_hipify

    out_dir = out_dir.resolve()
    staging = out_dir / "csrc"
    if staging.exists():
        shutil.rmtree(staging)
    # CPU kernels are not CUDA sources; leave them out of the translation.
    shutil.copytree(ROOT / "csrc", staging, ignore=shutil.ignore_patterns("cpu"))
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the file list
        torch_hipify(project_directory=str(staging), output_directory=str(staging),
                     includes=[str(staging / "*")], header_include_dirs=[],
                     is_pytorch_extension=True, show_detailed=False,
                     show_progress=False)
    return sorted(staging.rglob("*.hip"))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for path in hipify(Path(argv[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
