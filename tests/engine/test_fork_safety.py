"""The engine core is forked (vLLM's default start method) only while this
process's thread pools have not started; after a forward pass it is spawned,
as a forked child of a process with an OpenMP pool hangs."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                      "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_fork_only_before_thread_pools_start():
    out = _run("""
        import vllm, torch
        from vllm._fork_safety import fork_is_safe
        from vllm.engine.core_client import _start_method
        print("fresh", fork_is_safe(), _start_method())
        torch.set_num_threads(2)
        a = torch.randn(512, 512)
        (a @ a).sum()  # starts torch's OpenMP workers
        print("after", fork_is_safe(), _start_method())
    """)
    assert "fresh True fork" in out
    assert "after False spawn" in out


def test_never_fork_when_torch_was_loaded_before_vllm():
    # torch may have run kernels (started its pools) before vllm could count
    out = _run("""
        import torch
        import vllm
        from vllm.engine.core_client import _start_method
        print("method", _start_method())
    """)
    assert "method spawn" in out
