"""The engine sockets' encoding: every message kind survives the round trip
with its types, and anything else is refused as WireError (never run)."""
from __future__ import annotations

import pickle
import random

import msgpack
import pytest

from vllm.core.request import Request
from vllm.core.sched_output import EngineCoreOutput, SampledLogprobs, SchedulerStats
from vllm.engine.messages import (AbortRequests, AddRequest, EngineCoreOutputs, EngineDead,
                                  EngineReady, GetStats, ResetPrefixCache, Shutdown,
                                  StartProfile, StopProfile, UtilityResult)
from vllm.engine.wire import WireError, decode, encode
from vllm.sampling_params import RequestOutputKind, SamplingParams


def _request(rng: random.Random) -> Request:
    params = SamplingParams(n=1, temperature=rng.choice([0, 0.7]), top_k=rng.choice([-1, 5]),
                            seed=rng.choice([None, 3]), stop=["\n\n"], stop_token_ids=[2],
                            max_tokens=rng.randrange(1, 50), logprobs=rng.choice([None, 3]),
                            logit_bias={7: -2.5, 11: 3}, bad_words=["zz"],
                            output_kind=RequestOutputKind.DELTA)
    params.all_stop_token_ids |= {0, 2}
    params.bad_words_token_ids = [[5, 6]]
    return Request(f"r{rng.random()}", [rng.randrange(50_000) for _ in range(rng.randrange(1, 40))],
                   params, eos_token_id=rng.choice([None, 0]), arrival_time=rng.random() * 1e9,
                   cache_salt=rng.choice([None, "tenant-a"]))


def _same_request(a: Request, b: Request) -> None:
    for name in ("request_id", "prompt_token_ids", "eos_token_id", "arrival_time",
                 "cache_salt", "max_tokens", "all_token_ids", "status"):
        assert getattr(a, name) == getattr(b, name), name
    assert vars(a.sampling_params) == vars(b.sampling_params)


@pytest.mark.parametrize("seed", range(5))
def test_every_message_kind_round_trips(seed):
    rng = random.Random(seed)
    request = _request(rng)
    got = decode(encode(AddRequest(request)))
    assert isinstance(got, AddRequest)
    _same_request(got.request, request)
    assert isinstance(got.request.sampling_params.all_stop_token_ids, set)
    outputs = EngineCoreOutputs([
        EngineCoreOutput("a", [1, 2], logprobs=[SampledLogprobs([1, 9], [-0.1, -2.0], [1, 2])],
                         prompt_logprobs=None, finish_reason=None, stop_reason=None,
                         num_cached_tokens=32),
        EngineCoreOutput("b", [3], finish_reason="stop", stop_reason="\n\n"),
        EngineCoreOutput("c", [], finish_reason="stop", stop_reason=2)])
    stats = SchedulerStats(1, 2, 0.25, 10, 4, 0)
    for message in [outputs, AbortRequests(["a", "b"], stopped=True), ResetPrefixCache(1),
                    GetStats(2), StartProfile(3), StopProfile(4), Shutdown(),
                    UtilityResult(5, stats), UtilityResult(6, True), UtilityResult(7, "/t.json"),
                    UtilityResult(8, None, "RuntimeError: no profiler"), EngineReady(10, 32),
                    EngineDead("boom")]:
        assert decode(encode(message)) == message


@pytest.mark.parametrize("frame, needle", [
    (b"\xc1\xc1garbage", "not msgpack"),
    (pickle.dumps({"a": 1}), "not msgpack"),
    (msgpack.packb({"AddRequest": 1}), "not an engine message frame"),
    (msgpack.packb(["Popen", []]), "unknown message kind"),
    (msgpack.packb(["AbortRequests", [["a"]]]), "expected AbortRequests as 2 values"),
    (msgpack.packb(["AbortRequests", ["a", False]]), "AbortRequests.request_ids"),
    (msgpack.packb(["AbortRequests", [[1], False]]), "request_ids[0]"),
    (msgpack.packb(["EngineReady", [True, 32]]), "num_blocks"),  # a bool is not an int
    (msgpack.packb(["GetStats", [1.5]]), "call_id"),
    (msgpack.packb(["UtilityResult", [1, {"x": 1}, None]]), "UtilityResult.value"),
    (msgpack.packb(["EngineDead", [None]]), "EngineDead.reason"),
    (msgpack.packb(["EngineReady", [1, 2, 3]]), "as 2 values"),
    (msgpack.packb([b"AddRequest", []]), "not an engine message frame"),
    (msgpack.packb(["AddRequest", [[1, 2]]]), "AddRequest.request"),
])
def test_malformed_frames_are_refused(frame, needle):
    with pytest.raises(WireError) as info:
        decode(frame)
    assert needle in str(info.value)


def _add_request_frame(mutate) -> bytes:
    """A valid AddRequest frame, changed by mutate(list of request fields)."""
    kind, (fields,) = msgpack.unpackb(encode(AddRequest(_request(random.Random(0)))),
                                      strict_map_key=False)
    mutate(fields)
    return msgpack.packb([kind, [fields]])


@pytest.mark.parametrize("mutate, needle", [
    (lambda f: f[1].append("x"), "prompt_token_ids["),
    (lambda f: f.__setitem__(0, 7), "request_id"),
    (lambda f: f[2].__setitem__(0, -5), "n must be at least 1"),  # checked values too
    (lambda f: f[2].__setitem__(5, -1.0), "temperature"),
    (lambda f: f[2].__setitem__(_field("logits_processors"), ["os.system"]),
     "logits_processors: must be null"),
    (lambda f: f[2].__setitem__(_field("output_kind"), 99), "output_kind"),
    (lambda f: f[2].__setitem__(_field("logit_bias"), {"7": 1.0}), "sampling_params.logit_bias"),
    (lambda f: f[2].pop(), "SamplingParams as"),
])
def test_request_fields_are_type_and_value_checked(mutate, needle):
    with pytest.raises(WireError) as info:
        decode(_add_request_frame(mutate))
    assert needle in str(info.value)


def _field(name: str) -> int:
    import dataclasses
    return [f.name for f in dataclasses.fields(SamplingParams) if f.init].index(name)


def test_code_is_never_sent():
    request = _request(random.Random(1))
    request.sampling_params.logits_processors = [lambda ids, logits: logits]
    with pytest.raises(WireError, match="cannot be sent"):
        encode(AddRequest(request))
    with pytest.raises(WireError, match="not an engine message"):
        encode(request)
