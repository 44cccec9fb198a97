"""The engine sockets' encoding: typed msgpack frames checked against the
message dataclasses' field types, never pickle.

A frame is [kind, [field values...]], kind one of messages.MESSAGE_TYPES by
name. Dataclasses travel as lists of their field values in declaration
order; sets and tuples as lists; enums as their values. Decoding rebuilds
only the declared types and checks every value against its annotation, so
a foreign or malformed frame raises WireError and can be dropped: nothing
in it is ever called or imported (pickle's flaw: vLLM's CVE-2025-30165)."""
from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import types
import typing
from typing import Any, Union

import msgpack

from vllm.core.request import Request
from vllm.engine.messages import MESSAGE_TYPES
from vllm.sampling_params import SamplingParams

logger = logging.getLogger(__name__)
_KINDS = {cls.__name__: cls for cls in MESSAGE_TYPES}


class WireError(ValueError):
    """A frame that is not a well-formed engine message."""


# Largest frame either side accepts: a step's outputs with prompt logprobs of
# a long prompt stay far below; a stranger's giant frame is cut off by ZeroMQ.
MAX_FRAME_BYTES = 256 << 20


class DropLog:
    """Logs frames dropped as malformed: the first few, then one in a
    thousand, so a flood cannot flood the log too."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.count = 0

    def __call__(self, error: WireError) -> None:
        self.count += 1
        if self.count <= 10 or self.count % 1000 == 0:
            logger.warning("dropped a malformed message on the %s (%d so far): %s",
                           self.where, self.count, str(error)[:200])


# ------------------------------------------------------------------ encoding
def _plain(value: Any) -> Any:
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 64):
        raise WireError(f"integer {value} does not fit in 64 bits")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Request):
        return [_plain(v) for v in _request_fields(value)]
    if dataclasses.is_dataclass(value):
        return [_plain(getattr(value, f.name)) for f in _fields(type(value))]
    if isinstance(value, (set, frozenset)):
        return [_plain(v) for v in sorted(value)]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    raise WireError(f"{type(value).__name__} cannot be sent to the engine process")


def encode(message: Any) -> bytes:
    kind = type(message).__name__
    if _KINDS.get(kind) is not type(message):
        raise WireError(f"{kind} is not an engine message")
    return msgpack.packb([kind, _plain(message)], use_bin_type=True)


# ------------------------------------------------------------------ decoding
@functools.cache
def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# A Request crosses as the arguments that build it (the rest is core state).
_REQUEST_FIELDS = (("request_id", str), ("prompt_token_ids", list[int]),
                   ("sampling_params", SamplingParams), ("eos_token_id", Union[int, None]),
                   ("arrival_time", float), ("cache_salt", Union[str, None]))


def _request_fields(request: Request) -> list:
    return [getattr(request, name) for name, _ in _REQUEST_FIELDS]


# Where a value sits in the message, built lazily: (parent, part) pairs
# turned into "AddRequest.request.sampling_params.n" only for an error.
Where = Union[str, tuple]


def _path(where: Where) -> str:
    parts = []
    while isinstance(where, tuple):
        where, part = where
        parts.append(part)
    return where + "".join(reversed(parts))


class _Mismatch(WireError):
    """A value of the wrong type; the message is built only if read (a union
    tries its members in turn, and most tries fail)."""

    def __init__(self, where: Where, tp: Any, value: Any) -> None:
        super().__init__()
        self.where, self.tp, self.got = where, tp, type(value).__name__

    def __str__(self) -> str:
        return (f"{_path(self.where)}: expected {getattr(self.tp, '__name__', self.tp)}, "
                f"got {self.got}")


def _fail(where: Where, tp: Any, value: Any) -> typing.NoReturn:
    raise _Mismatch(where, tp, value)


# scalar type -> (msgpack types accepted for it, conversion)
_SCALARS = {bool: ((bool,), bool), int: ((int,), int), float: ((float, int), float),
            str: ((str,), str)}


@functools.cache
def _checker(tp: Any) -> typing.Callable[[Any, Where], Any]:
    """A function decoding one value of type tp (or raising WireError),
    built once per type: the per-message work is only the checks."""
    origin = typing.get_origin(tp)
    if tp is type(None) or tp is None:
        def check(value, where):
            if value is None:
                return None
            _fail(where, tp, value)
    elif origin in (Union, types.UnionType):
        members = [_checker(m) for m in typing.get_args(tp)]

        def check(value, where):
            for member in members:
                try:
                    return member(value, where)
                except WireError:
                    continue
            _fail(where, tp, value)
    elif tp in _SCALARS:
        accepted, convert = _SCALARS[tp]  # exact types: a bool is not an int here

        def check(value, where):
            if type(value) in accepted:
                return convert(value)
            _fail(where, tp, value)
    elif origin in (list, set, tuple):
        item_tp = typing.get_args(tp)[0]
        item = _checker(item_tp)

        def check(value, where):
            if type(value) is not list:
                _fail(where, tp, value)
            if item_tp is int and all(type(v) is int for v in value):
                return origin(value)  # token ids: the common, long case, checked in C
            return origin([item(v, (where, f"[{i}]")) for i, v in enumerate(value)])
    elif origin is dict:
        key_check, value_check = (_checker(t) for t in typing.get_args(tp))

        def check(value, where):
            if type(value) is not dict:
                _fail(where, tp, value)
            return {key_check(k, (where, " key")): value_check(v, (where, f"[{k!r}]"))
                    for k, v in value.items()}
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        def check(value, where):
            try:
                return tp(value)
            except (ValueError, TypeError):
                _fail(where, tp, value)
    elif tp is Request:
        fields = [(name, _checker(t)) for name, t in _REQUEST_FIELDS]

        def check(value, where):
            if type(value) is not list or len(value) != len(fields):
                _fail(where, tp, value)
            args = [c(v, (where, f".{n}")) for v, (n, c) in zip(value, fields)]
            return Request(*args[:4], arrival_time=args[4], cache_salt=args[5])
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
        def check(value, where):
            return _dataclass(value, tp, where)
    else:  # Any, object, callables: nothing untyped crosses the sockets
        def check(value, where):
            raise WireError(f"{_path(where)}: type {tp} has no wire form")
    return check


@functools.cache
def _field_checkers(cls: type) -> tuple:
    hints = _hints(cls)
    return tuple((f.name, f".{f.name}",
                  _checker(hints[f.name]) if not _is_code(cls, f.name) else None)
                 for f in _fields(cls))


def _is_code(cls: type, name: str) -> bool:
    return cls is SamplingParams and name == "logits_processors"


def _dataclass(value: Any, cls: type, where: Where) -> Any:
    fields = _field_checkers(cls)
    if type(value) is not list or len(value) != len(fields):
        raise WireError(f"{_path(where)}: expected {cls.__name__} as {len(fields)} values")
    obj = object.__new__(cls)  # no __post_init__: the values are already final
    for (name, part, check), v in zip(fields, value):
        if check is None:  # callables never cross: nothing to run arrives
            if v is not None:
                raise WireError(f"{_path(where)}.{name}: must be null")
            setattr(obj, name, None)
        else:
            setattr(obj, name, check(v, (where, part)))
    if cls is SamplingParams:
        try:
            obj._verify()
        except ValueError as exc:
            raise WireError(f"{_path(where)}: {exc}") from None
    return obj


def decode(frame: bytes) -> Any:
    """The message in frame; WireError if it is not exactly one of ours."""
    try:
        data = msgpack.unpackb(frame, raw=False, strict_map_key=False)  # int keys: logit_bias
    except Exception as exc:  # any malformed input: msgpack raises several kinds
        raise WireError(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], str)):
        raise WireError("not an engine message frame")
    cls = _KINDS.get(data[0])
    if cls is None:
        raise WireError(f"unknown message kind {data[0][:64]!r}")
    return _dataclass(data[1], cls, cls.__name__)
