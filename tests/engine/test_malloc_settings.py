"""glibc malloc settings: freed big temporaries are reused, not faulted in
again, checked by the kernel's own page-fault count in a fresh process."""
import os
import subprocess
import sys

import pytest

from vllm import malloc_settings

# Allocates, fills and frees a 40 MiB buffer (above glibc's largest dynamic
# mmap threshold, so by default a fresh mapping every time) and prints the
# minor page faults of four rounds after twelve to settle (torch's 64-byte
# aligned blocks take glibc a few rounds to find a free block they fit).
_CHILD = r"""
import resource, sys, torch
from vllm import malloc_settings
if sys.argv[1] == "keep":
    assert malloc_settings.keep_freed_memory()
def round_():
    t = torch.empty(40 << 20, dtype=torch.uint8)
    t.fill_(1)
    del t
for _ in range(12):
    round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc on Linux only")
def test_freed_big_blocks_are_reused_without_page_faults():
    default, kept = _faults("default"), _faults("keep")
    pages = 4 * (40 << 20) // 4096  # 40,960 pages in four rounds
    assert default > pages // 2  # fresh mappings: every page faulted in again
    assert kept < pages // 20


def test_user_choice_of_allocator_is_left_alone(monkeypatch):
    monkeypatch.setattr(malloc_settings, "_done", False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert malloc_settings.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    assert malloc_settings.keep_freed_memory() is False
