"""Every test starts without stray VLLM_* settings from the caller's shell,
and with usage statistics off (DO_NOT_TRACK=1): nothing in the suite may
contact an outside address. Tests of the usage statistics turn it back on
and point the server variable at loopback."""
import os

import pytest


@pytest.fixture(autouse=True)
def _no_stray_vllm_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("VLLM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DO_NOT_TRACK", "1")
