"""Whether this process may still be forked safely.

`import torch` starts a helper thread of its own; a forward pass adds the
OpenMP worker threads, and a pool of those does not survive a fork (the
child hangs in its first parallel region). The native thread count right
after `import vllm` imports torch is the baseline: at or under it, fork is
safe. If torch was loaded before vllm, it may already have run kernels, so
there is no trustworthy baseline and fork is never considered safe."""
from __future__ import annotations

import os
import sys

# Evaluated when `vllm/__init__.py` imports this module, before it imports torch.
_TORCH_LOADED_FIRST = "torch" in sys.modules
BASELINE: int | None = None


def native_thread_count() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no procfs: not Linux, assume unsafe
        return None


def record_baseline() -> None:
    """Called by `vllm/__init__.py` right after it imports torch."""
    global BASELINE
    BASELINE = None if _TORCH_LOADED_FIRST else native_thread_count()


def fork_is_safe() -> bool:
    now = native_thread_count()
    return now is not None and BASELINE is not None and now <= BASELINE
