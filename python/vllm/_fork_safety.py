"""Whether this process may still be forked safely.

`import torch` starts a helper thread of its own; a forward pass adds the
OpenMP worker threads, and a pool of those does not survive a fork (the
child hangs in its first parallel region). So the native thread count right
after `import torch` (taken when `vllm` is imported) is the baseline: at or
under it, fork is safe."""
from __future__ import annotations

import os


def native_thread_count() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no procfs: not Linux, assume unsafe
        return None


BASELINE = native_thread_count()


def fork_is_safe() -> bool:
    now = native_thread_count()
    return now is not None and BASELINE is not None and now <= BASELINE
