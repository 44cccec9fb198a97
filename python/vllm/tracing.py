"""VLLM_TRACE_FUNCTION=1: every Python call and return in this process (and
its threads) is written to a trace file, as vLLM's debugging aid does. It is
very slow; a warning says where the file is."""
from __future__ import annotations

import datetime
import logging
import os
import sys
import threading

from vllm import envs

logger = logging.getLogger(__name__)
_trace_file = None


def trace_path() -> str:
    directory = os.path.join(envs.VLLM_CACHE_ROOT, "function_traces")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(directory, f"vllm-trace-pid{os.getpid()}-{stamp}.log")


def enable_function_trace(path: str | None = None) -> str:
    global _trace_file
    if _trace_file is not None:
        return _trace_file.name
    path = path or trace_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _trace_file = open(path, "a", buffering=1 << 16, encoding="utf-8")
    out = _trace_file

    def tracer(frame, event, arg):
        if event in ("call", "return"):
            code = frame.f_code
            caller = frame.f_back
            where = (f"{caller.f_code.co_filename}:{caller.f_lineno}" if caller is not None
                     else "?")
            out.write(f"{datetime.datetime.now().isoformat()} {event} "
                      f"{code.co_name} in {code.co_filename}:{frame.f_lineno} from {where}\n")
        return tracer

    sys.settrace(tracer)
    threading.settrace(tracer)
    logger.warning("VLLM_TRACE_FUNCTION is on: every function call is logged to %s; this "
                   "slows everything down a lot, use it for debugging only", path)
    return path
