"""The private directory holding one server's engine sockets.

Created fresh under VLLM_RPC_BASE_PATH by mkdtemp (mode 0700, unpredictable
name), so no other user can reach the sockets or swap them. Removed when the
client closes; by the engine core when its API process was killed; and, for
directories whose creator died with no chance to clean up (SIGKILL of the
whole group), by the next server of the same user that starts."""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile

logger = logging.getLogger(__name__)

_PREFIX = "vllm-ipc-"
_NAME = re.compile(rf"^{_PREFIX}(\d+)-[A-Za-z0-9_]+$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def sweep_stale(base: str) -> None:
    """Remove socket directories this user made whose creating process is gone."""
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        match = _NAME.match(entry.name)
        if not match or _alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False) and entry.stat().st_uid == os.getuid():
                shutil.rmtree(entry.path, ignore_errors=True)
                logger.info("removed the stale engine socket directory %s", entry.path)
        except OSError:
            pass


def make_socket_dir(base: str) -> str:
    os.makedirs(base, exist_ok=True)
    sweep_stale(base)
    path = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base)
    os.chmod(path, 0o700)  # mkdtemp's mode already; stated for the reader
    return path


def remove_socket_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
