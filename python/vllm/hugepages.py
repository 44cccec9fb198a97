"""Transparent huge pages for the engine's big CPU buffers (linear weights,
KV cache).

Why: a batch-1 decode step streams ~270 MB of weights, and decode attention
reads KV blocks scattered over a multi-GiB cache; on 4 KiB pages both take a
TLB miss every 4 KiB. Measured here (bench/RESULTS.md): SmolLM2's layer GEMVs
8-15% faster, decode attention over 32 x 2048 tokens 16-20 -> 20-23 GB/s.
(First touches of the lazily zeroed cache cost about the same either way on
this VM: the host backs new memory slowly.) Linux's default THP mode is
`madvise`, so the engine has to ask (`madvise(MADV_HUGEPAGE)`); torch only
does so for every allocation with THP_MEM_ALLOC_ENABLE=1 set before its
first one.

Where huge pages are unavailable (another OS, THP `never`) the buffers are
plain memory: `advise` reports 0 bytes and nothing else changes."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # <sys/mman.h> on Linux

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


def advise(tensor: torch.Tensor) -> int:
    """Asks for huge pages under the 2 MiB-aligned interior of a contiguous
    CPU tensor's memory; returns the bytes advised (0 when not done). Pages
    already touched keep their size until the kernel's khugepaged merges
    them, so call this before filling the tensor."""
    if not enabled or _madvise is None or tensor.device.type != "cpu":
        return 0
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first = (start + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    last = end & ~(HUGE_PAGE - 1)
    if last <= first:
        return 0
    if _madvise(first, last - first, _MADV_HUGEPAGE) != 0:
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
