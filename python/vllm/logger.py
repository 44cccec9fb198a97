"""vLLM's logging set-up, as the reference defines it:

* VLLM_CONFIGURE_LOGGING=0: logging is left entirely to the application
  (setting VLLM_LOGGING_CONFIG_PATH as well is a contradiction: an error);
* VLLM_LOGGING_CONFIG_PATH: a JSON logging.config.dictConfig file (a
  missing file or bad JSON is an error naming the variable);
* otherwise the `vllm` logger gets one stdout handler at VLLM_LOGGING_LEVEL,
  each line prefixed with VLLM_LOGGING_PREFIX and naming its process (the
  engine core runs in its own)."""
from __future__ import annotations

import json
import logging
import logging.config
import os
import sys

from vllm import envs

_FORMAT = "%(levelname)s %(asctime)s %(processName)s(%(process)d) [%(name)s] %(message)s"
_configured = False


class LoggingConfigError(RuntimeError):
    """The logging variables contradict each other or name a bad file."""


def _load_config_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise LoggingConfigError(f"VLLM_LOGGING_CONFIG_PATH={path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise LoggingConfigError(f"VLLM_LOGGING_CONFIG_PATH={path!r} is not readable JSON: "
                                 f"{exc}") from None
    if not isinstance(config, dict):
        raise LoggingConfigError(f"VLLM_LOGGING_CONFIG_PATH={path!r} must hold a JSON object "
                                 "(a logging.config.dictConfig dictionary)")
    return config


def init_logging() -> None:
    """Configure once per process (called at `import vllm`)."""
    global _configured
    if _configured:
        return
    path = envs.VLLM_LOGGING_CONFIG_PATH
    if not envs.VLLM_CONFIGURE_LOGGING:
        if path:
            raise LoggingConfigError(
                "VLLM_LOGGING_CONFIG_PATH is set but VLLM_CONFIGURE_LOGGING=0 tells vLLM not "
                "to configure logging: unset one of them")
        _configured = True
        return
    if path:
        logging.config.dictConfig(_load_config_file(path))
        _configured = True
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(envs.VLLM_LOGGING_PREFIX + _FORMAT,
                                           datefmt="%m-%d %H:%M:%S"))
    root = logging.getLogger("vllm")
    root.addHandler(handler)
    root.setLevel(envs.VLLM_LOGGING_LEVEL)
    root.propagate = False
    _configured = True


def init_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def warn_deprecated(message: str) -> None:
    """A DeprecationWarning, unless VLLM_NO_DEPRECATION_WARNING=1."""
    if not envs.VLLM_NO_DEPRECATION_WARNING:
        import warnings
        warnings.warn(message, DeprecationWarning, stacklevel=3)
