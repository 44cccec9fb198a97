"""glibc malloc settings for the engine process.

Each step allocates and frees the same big temporaries (logits, the MLP's
activations: megabytes each). glibc serves blocks above its mmap threshold
(dynamic, at most 32 MiB) with a fresh mapping and unmaps them on free, and
trims the heap top back to the kernel; the next step then faults the same
memory in again, 4 KiB at a time, zero-filled by the kernel. Measured here
(bench/RESULTS.md, session 5): ~1,500-2,000 page faults in every
64-sequence decode step (a 64 x 128 run: 268-388k faults, 103-110k with
these settings); the time saved was within this VM's run-to-run noise in
alternating runs. With higher thresholds freed
blocks stay in the heap and are reused; the process keeps its peak working
set instead of handing it back between steps.

vLLM's CPU guide gets the same effect by preloading TCMalloc; with another
allocator preloaded, or these thresholds set through glibc's MALLOC_*_
environment variables, nothing here changes them."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

from vllm import envs

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3

# Blocks up to this size come from the heap: logits of a few hundred rows and
# a 2,048-token step's activations. The KV cache and the weights are mapped
# separately (vllm/worker/cpu_worker.py, vllm/hugepages.py).
MMAP_THRESHOLD = 256 << 20
# Freed memory at the heap top is kept up to this much.
TRIM_THRESHOLD = 1 << 30

_done = False


def _user_chose_allocator() -> bool:
    preload = envs.raw_value("LD_PRELOAD") or ""
    return (any(name in preload for name in ("tcmalloc", "jemalloc", "mimalloc"))
            or envs.is_set("MALLOC_MMAP_THRESHOLD_") or envs.is_set("MALLOC_TRIM_THRESHOLD_"))


def keep_freed_memory() -> bool:
    """Raises glibc's mmap and trim thresholds once per process; returns
    whether they are set (False off glibc or where the user chose)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or _user_chose_allocator():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
          and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    if ok:
        logger.info("glibc malloc keeps freed blocks up to %d MiB for reuse",
                    MMAP_THRESHOLD >> 20)
    _done = ok
    return ok
