"""The scheduler: each step, one token budget shared by decodes, prefills
and prefill chunks (no separate phases), over the paged KV cache.

Running requests go first, in arrival order, each asking for the tokens it
still lacks (one for a decode, the rest of the prompt for a chunked prefill).
When blocks run out the newest running request is preempted: its blocks are
freed and it is recomputed later (its cached blocks usually survive as
prefix-cache hits). Waiting requests are admitted with what budget, seats
(max_num_seqs) and blocks remain, after a prefix-cache lookup.

With pipeline parallelism several steps are in flight at once (one per
stage). A request's computed-token count advances when it is scheduled, so
a decode whose token has not come back has nothing to schedule and sits
the next step out; requests in flight are never preempted; and each step
takes at most its share (1/micro_batches) of the live requests, so the
stages get micro-batches of similar size."""
from __future__ import annotations

from collections import Counter, deque

from vllm.config import SchedulerConfig
from vllm.core.block_pool import BlockPool
from vllm.core.kv_cache_manager import KVCacheManager
from vllm.core.request import Request, RequestStatus
from vllm.core.sched_output import (CachedRequestData, EngineCoreOutput, ModelRunnerOutput,
                                    NewRequestData, SchedulerOutput)


class Scheduler:
    def __init__(self, config: SchedulerConfig, num_blocks: int, block_size: int,
                 enable_prefix_caching: bool, micro_batches: int = 1) -> None:
        self.config = config
        self.micro_batches = micro_batches
        self.in_flight: Counter[str] = Counter()  # scheduled steps without a result yet
        self.block_size = block_size
        self.kv = KVCacheManager(BlockPool(num_blocks, enable_prefix_caching), block_size)
        self.requests: dict[str, Request] = {}
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._finished_ids: set[str] = set()  # for the runner, next step
        self.num_preemptions = 0

    # ------------------------------------------------------------ requests
    def add_request(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def finish_requests(self, request_ids, status: RequestStatus) -> None:
        """Abort or stop requests from outside (stop strings, client abort)."""
        for req_id in ([request_ids] if isinstance(request_ids, str) else request_ids):
            request = self.requests.get(req_id)
            if request is None or request.is_finished():
                continue
            if request.status == RequestStatus.RUNNING:
                self.running.remove(request)
            else:
                self.waiting.remove(request)
            request.status = status
            self._free(request)

    def _free(self, request: Request) -> None:
        self.kv.free(request)
        self._finished_ids.add(request.request_id)
        del self.requests[request.request_id]

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def get_num_unfinished_requests(self) -> int:
        return len(self.waiting) + len(self.running)

    # ------------------------------------------------------------ schedule
    def _preempt(self, request: Request) -> None:
        self.kv.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def schedule(self) -> SchedulerOutput:
        budget = self.config.max_num_batched_tokens
        num_scheduled: dict[str, int] = {}
        new_reqs: list[NewRequestData] = []
        cached_reqs: list[CachedRequestData] = []
        preempted: set[str] = set()
        max_len = self.config.max_model_len

        seats = self._seats_this_step()
        waits_for_blocks = False
        index = 0
        while index < len(self.running) and budget > 0 and len(num_scheduled) < seats:
            request = self.running[index]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget,
                          max_len - request.num_computed_tokens)
            if num_new <= 0:  # nothing to compute (cannot happen for live requests)
                index += 1
                continue
            blocks_before = len(self.kv.req_blocks.get(request.request_id, []))
            while not self.kv.allocate_slots(request, num_new):
                victim = self._victim(index)
                if victim is None:  # only requests in flight to free: wait for them
                    waits_for_blocks = True
                    break
                self.running.remove(victim)
                self._preempt(victim)
                preempted.add(victim.request_id)
                if victim is request:
                    break
            else:
                num_scheduled[request.request_id] = num_new
                budget -= num_new
                block_ids = self.kv.block_ids(request.request_id)
                cached_reqs.append(CachedRequestData(request.request_id,
                                                     block_ids[blocks_before:],
                                                     request.num_computed_tokens))
                index += 1
                continue
            break  # the current request was preempted, or waits for blocks

        if not preempted and not waits_for_blocks:
            while (self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs
                   and len(num_scheduled) < seats):
                request = self.waiting[0]
                hits, num_hit_tokens = self.kv.get_computed_blocks(request)
                num_new = request.num_tokens - num_hit_tokens
                if not self.config.enable_chunked_prefill and num_new > budget:
                    break
                num_new = min(num_new, budget)
                if not self.kv.allocate_slots(request, num_new, hits):
                    break
                self.waiting.popleft()
                request.num_computed_tokens = num_hit_tokens
                if request.num_cached_tokens < 0:
                    request.num_cached_tokens = num_hit_tokens
                request.status = RequestStatus.RUNNING
                self.running.append(request)
                num_scheduled[request.request_id] = num_new
                budget -= num_new
                new_reqs.append(NewRequestData(
                    request.request_id, list(request.all_token_ids), request.num_prompt_tokens,
                    request.sampling_params, self.kv.block_ids(request.request_id),
                    num_hit_tokens))

        for req_id, count in num_scheduled.items():
            self.requests[req_id].num_computed_tokens += count
            self.in_flight[req_id] += 1
        output = SchedulerOutput(new_reqs, cached_reqs, num_scheduled,
                                 sum(num_scheduled.values()), self._finished_ids, preempted)
        self._finished_ids = set()
        return output

    def _seats_this_step(self) -> int:
        if self.micro_batches == 1:
            return self.config.max_num_seqs
        live = len(self.running) + len(self.waiting)
        return max(1, -(-live // self.micro_batches))

    def _victim(self, index: int) -> Request | None:
        """The newest running request from `index` on (those before it are
        scheduled this step) with no step in flight."""
        for victim in reversed(self.running[index:]):
            if not self.in_flight[victim.request_id]:
                return victim
        return None

    # ------------------------------------------------------------ update
    def _check_stop(self, request: Request, token: int) -> bool:
        params = request.sampling_params
        if (request.num_tokens >= self.config.max_model_len
                or (request.max_tokens is not None
                    and request.num_output_tokens >= request.max_tokens)):
            request.status = RequestStatus.FINISHED_LENGTH_CAPPED
            return True
        if request.num_output_tokens < params.min_tokens:
            return False
        if not params.ignore_eos and token == request.eos_token_id:
            request.status = RequestStatus.FINISHED_STOPPED
            return True
        if token in params.all_stop_token_ids:
            request.status = RequestStatus.FINISHED_STOPPED
            request.stop_reason = token
            return True
        return False

    def update_from_output(self, sched: SchedulerOutput,
                           result: ModelRunnerOutput) -> list[EngineCoreOutput]:
        outputs: list[EngineCoreOutput] = []
        for req_id in sched.num_scheduled_tokens:
            self.in_flight[req_id] -= 1
            if not self.in_flight[req_id]:
                del self.in_flight[req_id]
            request = self.requests.get(req_id)
            if request is None or request.is_finished():  # aborted meanwhile
                continue
            prompt_logprobs = result.prompt_logprobs.get(req_id)
            token = result.sampled_token_ids.get(req_id)
            if token is None:  # a prefill chunk: no token yet
                if prompt_logprobs:
                    outputs.append(EngineCoreOutput(req_id, [], None, prompt_logprobs,
                                                    num_cached_tokens=request.num_cached_tokens))
                continue
            request.append_output_token(token)
            stopped = self._check_stop(request, token)
            logprobs = result.logprobs.get(req_id)
            outputs.append(EngineCoreOutput(
                req_id, [token], [logprobs] if logprobs is not None else None,
                prompt_logprobs, request.status.finish_reason if stopped else None,
                request.stop_reason, request.num_cached_tokens))
            if stopped:
                self.running.remove(request)
                self._free(request)
        return outputs

    # ------------------------------------------------------------ stats
    def kv_cache_usage(self) -> float:
        return self.kv.pool.usage()

    def prefix_cache_hit_rate(self) -> float:
        return self.kv.hit_rate()

    def reset_prefix_cache(self) -> bool:
        return self.kv.pool.reset_prefix_cache()
