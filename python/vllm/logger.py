"""vLLM's logging set-up: the `vllm` logger gets one handler with a format
that names the process (the engine core runs in its own), honouring
VLLM_CONFIGURE_LOGGING, VLLM_LOGGING_LEVEL and VLLM_LOGGING_PREFIX."""
from __future__ import annotations

import logging
import sys

from vllm import envs

_FORMAT = "%(levelname)s %(asctime)s %(processName)s(%(process)d) [%(name)s] %(message)s"
_configured = False


def init_logging() -> None:
    global _configured
    if _configured or not envs.VLLM_CONFIGURE_LOGGING:
        return
    _configured = True
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(envs.VLLM_LOGGING_PREFIX + _FORMAT,
                                           datefmt="%m-%d %H:%M:%S"))
    root = logging.getLogger("vllm")
    root.addHandler(handler)
    root.setLevel(envs.VLLM_LOGGING_LEVEL)
    root.propagate = False


def init_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
