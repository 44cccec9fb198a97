"""Page sizes for the engine's big CPU buffers: transparent huge pages for
the linear weights, and for the KV cache unless fresh huge pages are slow
to fault in on this machine.

Why huge pages for weights: a batch-1 decode step streams ~270 MB of them,
and on 4 KiB pages that is a TLB miss every 4 KiB. Measured here
(bench/RESULTS.md): SmolLM2's layer GEMVs 8-15% faster. Linux's default THP
mode is `madvise`, so the engine has to ask (`madvise(MADV_HUGEPAGE)`); torch
only does so for every allocation with THP_MEM_ALLOC_ENABLE=1 set before its
first one (numpy does for its own buffers above 4 MiB).

The weights are touched once, at load. The KV cache is zeroed lazily and
first touched while serving: on huge pages its long-context decode attention
reads 6-14% faster, but on a VM whose balloon reports free guest memory to
the host (free page reporting, as on this project's Firecracker machines) a
fresh 2 MiB page costs ~5 ms to fault in, 4-5x more per byte than 4 KiB
pages; a 64-sequence decode step stalled ~3 ms on it, and start-up 0.4 s
(bench/RESULTS.md, session 5). So the cache takes huge pages except where
`host_reclaims_free_memory`.

Where huge pages are unavailable (another OS, THP `never`) the buffers are
plain memory: `advise` reports 0 bytes and nothing else changes."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

import torch

HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # <sys/mman.h> on Linux
_MADV_NOHUGEPAGE = 15

# Off switch for A/B measurements (bench) and tests; set before the model loads.
enabled = True

_madvise = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _madvise = _libc.madvise
        _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        _madvise = None


def advise(tensor: torch.Tensor, huge: bool = True) -> int:
    """Asks for huge pages (or, with huge=False, for small pages only,
    overriding numpy's own advice) under the 2 MiB-aligned interior of a
    contiguous CPU tensor's memory; returns the bytes advised (0 when not
    done). Pages already touched keep their size until the kernel's
    khugepaged merges them, so call this before filling the tensor."""
    if not enabled or _madvise is None or tensor.device.type != "cpu":
        return 0
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first = (start + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    last = end & ~(HUGE_PAGE - 1)
    if last <= first:
        return 0
    if _madvise(first, last - first, _MADV_HUGEPAGE if huge else _MADV_NOHUGEPAGE) != 0:
        return 0  # EINVAL where THP is compiled out: plain pages, as before
    return last - first


def empty(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D uninitialised CPU tensor that starts on a 2 MiB boundary and is
    advised for huge pages (a plain torch.empty when that is not possible)."""
    nbytes = numel * dtype.itemsize
    if not enabled or _madvise is None or nbytes < HUGE_PAGE:
        return torch.empty(numel, dtype=dtype)
    raw = torch.empty(nbytes + HUGE_PAGE, dtype=torch.uint8)
    skip = -raw.data_ptr() % HUGE_PAGE
    aligned = raw[skip:skip + nbytes].view(dtype)
    advise(aligned)
    return aligned


# virtio-balloon devices and the feature bit of free page reporting
# (VIRTIO_BALLOON_F_REPORTING, linux/virtio_balloon.h)
_BALLOON_DEVICES = "/sys/bus/virtio/drivers/virtio_balloon"
_FREE_PAGE_REPORTING_BIT = 5


@functools.cache
def host_reclaims_free_memory() -> bool:
    """Whether a virtio balloon reports free guest memory to the host, which
    then drops it: a fresh huge page is then faulted back in 4 KiB at a time
    (measured here: ~5 ms per 2 MiB, against ~1 ms for 512 small pages)."""
    try:
        devices = [d for d in os.listdir(_BALLOON_DEVICES) if d.startswith("virtio")]
    except OSError:
        return False  # no balloon driver: bare metal, or a VM without one
    for device in devices:
        try:
            with open(os.path.join(_BALLOON_DEVICES, device, "features")) as f:
                bits = f.read().strip()  # one '0'/'1' per feature bit, bit 0 first
        except OSError:
            continue
        if len(bits) > _FREE_PAGE_REPORTING_BIT and bits[_FREE_PAGE_REPORTING_BIT] == "1":
            return True
    return False


def kv_cache_on_huge_pages() -> bool:
    """The KV cache's page size: huge unless fresh huge pages are slow to
    fault in here (its first touches happen while serving)."""
    return not host_reclaims_free_memory()
