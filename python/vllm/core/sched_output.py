"""Typed messages between the scheduler and the model runner."""
from __future__ import annotations

from dataclasses import dataclass, field

from vllm.sampling_params import SamplingParams


@dataclass
class NewRequestData:
    """A request the runner has not seen (or a resumed one, from scratch)."""
    req_id: str
    token_ids: list[int]  # prompt plus any outputs produced before preemption
    num_prompt_tokens: int
    sampling_params: SamplingParams
    block_ids: list[int]
    num_computed_tokens: int


@dataclass
class CachedRequestData:
    """A request the runner already holds: only what changed."""
    req_id: str
    new_block_ids: list[int]
    num_computed_tokens: int


@dataclass
class SchedulerOutput:
    scheduled_new_reqs: list[NewRequestData]
    scheduled_cached_reqs: list[CachedRequestData]
    num_scheduled_tokens: dict[str, int]  # in scheduling order
    total_num_scheduled_tokens: int
    finished_req_ids: set[str] = field(default_factory=set)  # drop their state
    preempted_req_ids: set[str] = field(default_factory=set)  # drop their state
    # Pipeline parallelism: tokens the last stage sampled since the previous
    # step went out, for the stages that did not sample them (the executor
    # fills this in; the scheduler never does)
    sampled_token_ids: dict[str, int] = field(default_factory=dict)


@dataclass
class SampledLogprobs:
    """Top logprobs at one position: token ids, logprobs and ranks (the
    sampled or actual token first, then the top-k in order)."""
    token_ids: list[int]
    logprobs: list[float]
    ranks: list[int]


@dataclass
class ModelRunnerOutput:
    sampled_token_ids: dict[str, int]  # requests that reached a new token
    logprobs: dict[str, SampledLogprobs] = field(default_factory=dict)
    # prompt logprobs computed this step, per request: one entry per position
    prompt_logprobs: dict[str, list[SampledLogprobs]] = field(default_factory=dict)


@dataclass
class EngineCoreOutput:
    req_id: str
    new_token_ids: list[int]
    logprobs: list[SampledLogprobs] | None = None
    prompt_logprobs: list[SampledLogprobs] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_cached_tokens: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class SchedulerStats:
    num_running_reqs: int
    num_waiting_reqs: int
    kv_cache_usage: float
    prefix_cache_queries: int  # prompt tokens looked up
    prefix_cache_hits: int  # of which found cached
    num_preemptions: int

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0
