"""From EngineCoreOutputs to RequestOutputs: detokenize, apply stop strings,
gather logprobs, and merge the n samples of a request into one output."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from vllm.core.sched_output import EngineCoreOutput, SampledLogprobs
from vllm.engine.detokenizer import IncrementalDetokenizer
from vllm.outputs import (CompletionOutput, Logprob, PositionLogprobs, RequestMetrics,
                          RequestOutput)
from vllm.sampling_params import RequestOutputKind, SamplingParams


@dataclass
class _SampleState:
    """One of a request's n samples (one scheduler request)."""
    index: int
    params: SamplingParams
    detokenizer: IncrementalDetokenizer | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[PositionLogprobs] | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    sent_tokens: int = 0  # for DELTA outputs
    sent_text: int = 0


@dataclass
class _ParentState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    samples: list[_SampleState]
    child_ids: list[str]
    metrics: RequestMetrics
    prompt_logprobs: list[PositionLogprobs | None] | None = None
    num_cached_tokens: int = 0

    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)


class OutputProcessor:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.parents: dict[str, _ParentState] = {}
        self.child_to_parent: dict[str, tuple[str, int]] = {}

    def add_request(self, request_id: str, child_ids: list[str], prompt: str | None,
                    prompt_token_ids: list[int], params: list[SamplingParams],
                    arrival_time: float) -> None:
        samples = []
        for index, (child, child_params) in enumerate(zip(child_ids, params)):
            detok = (IncrementalDetokenizer(self.tokenizer, prompt_token_ids,
                                            child_params.skip_special_tokens)
                     if child_params.detokenize else None)
            sample = _SampleState(index, child_params, detok)
            if child_params.logprobs is not None:
                sample.logprobs, sample.cumulative_logprob = [], 0.0
            samples.append(sample)
            self.child_to_parent[child] = (request_id, index)
        self.parents[request_id] = _ParentState(
            request_id, prompt, prompt_token_ids, params[0], samples, list(child_ids),
            RequestMetrics(arrival_time),
            [None] if params[0].prompt_logprobs is not None else None)

    def has_unfinished(self) -> bool:
        return bool(self.parents)

    def child_ids(self, request_id: str) -> list[str]:
        parent = self.parents.get(request_id)
        return list(parent.child_ids) if parent is not None else []

    def _decode_logprobs(self, entry: SampledLogprobs) -> PositionLogprobs:
        out: PositionLogprobs = {}
        for token, lp, rank in zip(entry.token_ids, entry.logprobs, entry.ranks):
            if token not in out:
                out[token] = Logprob(lp, rank, self.tokenizer.decode([token]))
        return out

    def _apply_stop_strings(self, sample: _SampleState, new_text: str) -> None:
        stops = sample.params.stop
        if not stops or sample.detokenizer is None:
            return
        text = sample.detokenizer.text
        for stop in stops:
            # only where the new text could have completed it
            start = max(0, len(text) - len(new_text) - len(stop) + 1)
            at = text.find(stop, start)
            if at >= 0:
                end = at + len(stop) if sample.params.include_stop_str_in_output else at
                sample.detokenizer.text = text[:end]
                sample.finish_reason, sample.stop_reason = "stop", stop
                return

    def process(self, outputs: list[EngineCoreOutput]
                ) -> tuple[list[RequestOutput], list[str]]:
        """RequestOutputs to hand out now, and the child request ids the core
        must stop (they hit a stop string)."""
        now = time.time()
        touched: dict[str, _ParentState] = {}
        to_stop: list[str] = []
        for out in outputs:
            link = self.child_to_parent.get(out.req_id)
            if link is None:
                continue
            parent = self.parents[link[0]]
            sample = parent.samples[link[1]]
            if out.prompt_logprobs and parent.prompt_logprobs is not None and link[1] == 0:
                parent.prompt_logprobs.extend(self._decode_logprobs(e)
                                              for e in out.prompt_logprobs)
            parent.num_cached_tokens = max(parent.num_cached_tokens, out.num_cached_tokens)
            if out.new_token_ids:
                if parent.metrics.first_token_time is None:
                    parent.metrics.first_token_time = now
                parent.metrics.last_token_time = now
                sample.token_ids.extend(out.new_token_ids)
                if out.logprobs and sample.logprobs is not None:
                    for entry in out.logprobs:
                        sample.logprobs.append(self._decode_logprobs(entry))
                        sample.cumulative_logprob += entry.logprobs[0]
                if sample.detokenizer is not None:
                    new_text = sample.detokenizer.add(out.new_token_ids)
                    if out.finish_reason is None:
                        self._apply_stop_strings(sample, new_text)
                        if sample.finish_reason is not None:
                            to_stop.append(out.req_id)
            if out.finish_reason is not None and sample.finish_reason is None:
                sample.finish_reason, sample.stop_reason = out.finish_reason, out.stop_reason
            touched[parent.request_id] = parent

        results = []
        for parent in touched.values():
            finished = parent.finished()
            if finished:
                parent.metrics.finished_time = now
                del self.parents[parent.request_id]
                for child in parent.child_ids:
                    self.child_to_parent.pop(child, None)
            output = self._make_output(parent, finished)
            if output is not None:
                results.append(output)
        return results, to_stop

    def abort(self, request_id: str) -> None:
        parent = self.parents.pop(request_id, None)
        for child in parent.child_ids if parent is not None else []:
            self.child_to_parent.pop(child, None)

    def _make_output(self, parent: _ParentState, finished: bool) -> RequestOutput | None:
        kind = parent.params.output_kind
        if kind == RequestOutputKind.FINAL_ONLY and not finished:
            return None
        completions = []
        for sample in parent.samples:
            text = sample.detokenizer.text if sample.detokenizer is not None else ""
            if sample.finish_reason is None and sample.params.stop:
                # hold back what could still become a stop string
                text = text[:max(0, len(text) - max(len(s) for s in sample.params.stop) + 1)]
            token_ids, logprobs = sample.token_ids, sample.logprobs
            if kind == RequestOutputKind.DELTA:
                text_delta = text[sample.sent_text:]
                token_ids = sample.token_ids[sample.sent_tokens:]
                if logprobs is not None:
                    logprobs = logprobs[sample.sent_tokens:]
                sample.sent_text, sample.sent_tokens = len(text), len(sample.token_ids)
                text = text_delta
            completions.append(CompletionOutput(
                sample.index, text, list(token_ids), sample.cumulative_logprob,
                list(logprobs) if logprobs is not None else None, sample.finish_reason,
                sample.stop_reason))
        return RequestOutput(parent.request_id, parent.prompt, parent.prompt_token_ids,
                             parent.prompt_logprobs, completions, finished, parent.metrics,
                             parent.num_cached_tokens)
