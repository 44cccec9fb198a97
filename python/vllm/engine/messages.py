"""Typed messages between the API process and the engine-core process. No
string-named calls: one dataclass per kind. On the wire they are msgpack
frames checked against these field types (engine/wire.py), never pickle."""
from __future__ import annotations

from dataclasses import dataclass

from vllm.core.request import Request
from vllm.core.sched_output import EngineCoreOutput, SchedulerStats


@dataclass
class AddRequest:
    request: Request


@dataclass
class AbortRequests:
    request_ids: list[str]
    stopped: bool = False  # True: finished by a stop string, not a client abort


@dataclass
class ResetPrefixCache:
    call_id: int


@dataclass
class GetStats:
    call_id: int


@dataclass
class StartProfile:
    call_id: int


@dataclass
class StopProfile:
    call_id: int


@dataclass
class Shutdown:
    pass


@dataclass
class UtilityResult:
    call_id: int
    value: SchedulerStats | bool | str | None
    error: str | None = None  # the call raised: its message


@dataclass
class EngineReady:
    num_blocks: int
    block_size: int


@dataclass
class EngineCoreOutputs:
    outputs: list[EngineCoreOutput]


@dataclass
class EngineDead:
    reason: str


# Every kind that may cross the sockets; a frame naming anything else is dropped.
MESSAGE_TYPES = (AddRequest, AbortRequests, ResetPrefixCache, GetStats, StartProfile,
                 StopProfile, Shutdown, UtilityResult, EngineReady, EngineCoreOutputs,
                 EngineDead)
