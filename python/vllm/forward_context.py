"""The one scoped place where per-step attention metadata lives while the
model runs: the runner enters ``set_forward_context`` around the forward
pass, attention layers read it. No other hidden globals."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

_CONTEXT: contextvars.ContextVar[Any] = contextvars.ContextVar("vllm_forward_context")


@contextlib.contextmanager
def set_forward_context(attn_metadata: Any) -> Iterator[None]:
    token = _CONTEXT.set(attn_metadata)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def get_attn_metadata() -> Any:
    try:
        return _CONTEXT.get()
    except LookupError:
        raise RuntimeError("attention ran outside set_forward_context()") from None


def get_attn_metadata_or_none() -> Any:
    """The step's metadata, or None outside a forward context (a model run
    on its own, as in tests)."""
    return _CONTEXT.get(None)
