"""The build record (vllm/_build_info.json) and the checks made from it.

CMake writes the record at build time. Importing vllm compares its torch with
the torch installed now, so a mismatch reads as one clear ImportError instead
of an undefined-symbol traceback from the compiled modules.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Optional

_RECORD = Path(__file__).with_name("_build_info.json")


@functools.lru_cache(maxsize=1)
def build_info() -> dict[str, Any]:
    """The record, or {} for a source checkout that was never built."""
    try:
        return json.loads(_RECORD.read_text())
    except FileNotFoundError:
        return {}


def installed_torch_version() -> Optional[str]:
    """torch.__version__ (with its local tag, e.g. +cpu), as the build saw it.

    Distribution metadata can drop the local tag (2.14.1 for 2.14.1+cu130),
    so ask torch itself; importing torch is safe, only our modules are not.
    """
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def check_torch_matches() -> None:
    """Raise ImportError when the compiled modules' torch is not installed."""
    info = build_info()
    built = info.get("torch_version")
    if not info.get("compiled_modules") or not built:
        return
    here = installed_torch_version()
    if here != built:
        raise ImportError(
            f"vllm {info.get('version')} was compiled against torch {built}, "
            f"but torch {here or '(none)'} is installed; install torch=={built} "
            "or rebuild vllm against this torch (pip install "
            "--no-build-isolation .)")
