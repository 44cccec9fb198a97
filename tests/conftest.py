"""Every test starts without stray VLLM_* settings from the caller's shell."""
import os

import pytest


@pytest.fixture(autouse=True)
def _no_stray_vllm_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("VLLM_"):
            monkeypatch.delenv(name)
