"""The engine sockets' directory: private, unpredictable, and stale ones
(their creator killed with no chance to clean up) swept at the next start."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

from vllm.engine.ipc_dir import make_socket_dir, remove_socket_dir


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has this id now (barring reuse)


def test_socket_dir_is_private_fresh_and_removed(tmp_path):
    first, second = make_socket_dir(str(tmp_path)), make_socket_dir(str(tmp_path))
    assert first != second and os.path.dirname(first) == str(tmp_path)
    for path in (first, second):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        assert os.path.basename(path).startswith(f"vllm-ipc-{os.getpid()}-")
    remove_socket_dir(first)
    assert not os.path.exists(first) and os.path.isdir(second)


def test_stale_dirs_of_dead_creators_are_swept(tmp_path):
    stale = tmp_path / f"vllm-ipc-{_dead_pid()}-abc123"
    stale.mkdir()
    (stale / "in.ipc").write_text("")
    alive = tmp_path / f"vllm-ipc-{os.getpid()}-keep"
    alive.mkdir()
    unrelated = tmp_path / "vllm-ipc-notapid"
    unrelated.mkdir()
    make_socket_dir(str(tmp_path))
    assert not stale.exists() and alive.exists() and unrelated.exists()
