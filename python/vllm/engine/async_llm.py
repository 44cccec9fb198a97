"""AsyncLLM: the asyncio front end of the engine (what the server uses).

Tokenizing, detokenizing and stop strings happen here, in the API process;
scheduling and the model run in the engine core (its own process by
default). A background task receives the core's outputs, turns them into
RequestOutputs in chunks of VLLM_V1_OUTPUT_PROC_CHUNK_SIZE (yielding to the
event loop between chunks), and hands each to its request's queue. It also
watches the core: if it dies, or a step takes longer than
VLLM_ENGINE_ITERATION_TIMEOUT_S, every request fails with EngineDeadError.

With data_parallel_size > 1 there are that many engine cores (replicas,
each with its model, KV cache and share of the CPUs). A request, with all
its n samples, goes to the replica with the fewest requests in flight; each
replica has its own output task; stats are summed over replicas; one dead
replica fails the whole engine (the server then exits)."""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import Counter, deque
from typing import AsyncIterator

from vllm import envs
from vllm.core.sched_output import SchedulerStats
from vllm.engine.arg_utils import EngineArgs
from vllm.engine.core_client import EngineCoreClient, EngineDeadError
from vllm.engine.messages import (AbortRequests, AddRequest, EngineCoreOutputs, EngineDead,
                                  GetStats, ResetPrefixCache, StartProfile, StopProfile,
                                  UtilityResult)
from vllm.engine.output_processor import OutputProcessor
from vllm.engine.processor import InputProcessor, ProcessedRequest, PromptType
from vllm.outputs import RequestOutput
from vllm.plugins import load_general_plugins
from vllm.sampling_params import SamplingParams
from vllm.usage.usage_lib import UsageContext, report_usage, usage_settings

logger = logging.getLogger(__name__)

_MAX_SAMPLES = 100_000


class FrontendStats:
    """Counters and latency samples the /metrics route reports."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished: Counter[str] = Counter()
        # Latency samples, drained by each /metrics scrape; bounded so a server
        # nobody scrapes does not grow without end.
        self.ttft: deque[float] = deque(maxlen=_MAX_SAMPLES)
        self.tpot: deque[float] = deque(maxlen=_MAX_SAMPLES)
        self.e2e: deque[float] = deque(maxlen=_MAX_SAMPLES)


class AsyncLLM:
    def __init__(self, args: EngineArgs, multiprocess: bool | None = None,
                 usage_context: UsageContext = UsageContext.ENGINE_CONTEXT) -> None:
        load_general_plugins()
        self.vllm_config, self.tokenizer = args.create_engine_config(usage_context)
        self.model_config = self.vllm_config.model_config
        self.processor = InputProcessor(self.model_config, self.tokenizer)
        self.output_processor = OutputProcessor(self.tokenizer)
        self.clients = [EngineCoreClient(config, self.tokenizer.eos_token_id,
                                         multiprocess=multiprocess)
                        for config in _replica_configs(self.vllm_config)]
        self.queues: dict[str, asyncio.Queue] = {}
        self.children: dict[str, list[str]] = {}
        self.replica_of: dict[str, int] = {}  # request id -> its replica
        self.in_flight = [0] * len(self.clients)  # core requests per replica
        self._next_replica = 0  # round robin among the least loaded
        self.pending_calls: dict[int, asyncio.Future] = {}
        self.call_ids = itertools.count()
        self.stats = FrontendStats()
        self.errored: str | None = None
        # per replica: when it last had work and no output
        self.busy_since: list[float | None] = [None] * len(self.clients)
        self._output_task: list[asyncio.Task] | None = None  # one per replica
        report_usage(usage_context, self.model_config.architecture,
                     usage_settings(self.vllm_config))

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> "AsyncLLM":
        return cls(args)

    def get_tokenizer(self):
        return self.tokenizer

    @property
    def is_running(self) -> bool:
        return self.errored is None

    @property
    def client(self) -> EngineCoreClient:
        """The first replica's client (the only one without data parallelism)."""
        return self.clients[0]

    def _ensure_output_task(self) -> None:
        if self._output_task is None:
            loop = asyncio.get_running_loop()
            self._output_task = [loop.create_task(self._output_loop(r))
                                 for r in range(len(self.clients))]

    def _pick_replica(self) -> int:
        """The least loaded replica; ties go round robin."""
        count = len(self.clients)
        start = self._next_replica
        best = min(range(count), key=lambda r: (self.in_flight[r], (r - start) % count))
        self._next_replica = (best + 1) % count
        return best

    # ------------------------------------------------------------ requests
    async def generate(self, prompt: PromptType, sampling_params: SamplingParams,
                       request_id: str, processed: ProcessedRequest | None = None
                       ) -> AsyncIterator[RequestOutput]:
        """Outputs of one request as they come; closing the generator (a
        client that went away) aborts the request and frees its blocks."""
        if self.errored is not None:
            raise EngineDeadError(self.errored)
        self._ensure_output_task()
        if request_id in self.queues:
            raise ValueError(f"request id {request_id!r} is already in use")
        arrival = time.time()
        if processed is None:
            processed = self.processor.process(request_id, prompt, sampling_params, arrival)
        if sampling_params.logits_processors:
            # The core runs in another process and its messages carry data only.
            raise ValueError("per-request logits_processors are not supported by AsyncLLM or "
                             "the server (the engine core takes no code over its sockets); "
                             "LLM.generate runs them in-process")
        queue: asyncio.Queue = asyncio.Queue()
        self.queues[request_id] = queue
        self.children[request_id] = [r.request_id for r in processed.children]
        self.output_processor.add_request(
            request_id, self.children[request_id], processed.prompt,
            processed.prompt_token_ids, [r.sampling_params for r in processed.children], arrival)
        self.stats.prompt_tokens += len(processed.prompt_token_ids)
        replica = self._pick_replica()
        client = self.clients[replica]
        self.replica_of[request_id] = replica
        self.in_flight[replica] += len(processed.children)
        finished = False
        try:
            for request in processed.children:
                await client.send(AddRequest(request))
            if self.busy_since[replica] is None:
                self.busy_since[replica] = time.monotonic()
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self.queues.pop(request_id, None)
            self.replica_of.pop(request_id, None)
            children = self.children.pop(request_id, [])
            self.in_flight[replica] -= len(processed.children)
            if not finished:
                self.output_processor.abort(request_id)
                if self.errored is None:
                    await client.send(AbortRequests(children))
                    self.stats.finished["abort"] += 1

    async def abort(self, request_id: str) -> None:
        queue = self.queues.get(request_id)
        children = self.children.get(request_id, [])
        self.output_processor.abort(request_id)
        if children:
            await self.clients[self.replica_of.get(request_id, 0)].send(AbortRequests(children))
        if queue is not None:
            queue.put_nowait(asyncio.CancelledError(f"request {request_id} aborted"))

    async def _call_one(self, client: EngineCoreClient, message_cls):
        call_id = next(self.call_ids)
        future = asyncio.get_running_loop().create_future()
        self.pending_calls[call_id] = future
        await client.send(message_cls(call_id))
        try:
            value = await asyncio.wait_for(future, envs.VLLM_RPC_TIMEOUT / 1000)
        finally:
            self.pending_calls.pop(call_id, None)
        if isinstance(value, Exception):
            raise value
        return value

    async def _call(self, message_cls) -> list:
        """The call on every replica; their answers in replica order."""
        self._ensure_output_task()
        return list(await asyncio.gather(*[self._call_one(c, message_cls)
                                           for c in self.clients]))

    async def get_stats(self) -> SchedulerStats:
        """Summed over replicas (KV usage: the mean, as each has an equal cache)."""
        stats = await self._call(GetStats)
        total = SchedulerStats(*[sum(getattr(s, f.name) for s in stats)
                                 for f in dataclasses.fields(SchedulerStats)])
        total.kv_cache_usage /= len(stats)
        return total

    async def reset_prefix_cache(self) -> bool:
        return all(await self._call(ResetPrefixCache))

    async def start_profile(self) -> None:
        await self._call(StartProfile)

    async def stop_profile(self) -> str:
        """Each replica writes its own trace; the first one's path."""
        return (await self._call(StopProfile))[0]

    # ------------------------------------------------------------ outputs
    def _fail_all(self, reason: str) -> None:
        if self.errored is None:
            logger.error("engine core is dead: %s", reason)
        self.errored = reason
        for queue in self.queues.values():
            queue.put_nowait(EngineDeadError(reason))
        for future in self.pending_calls.values():
            if not future.done():
                future.set_exception(EngineDeadError(reason))

    async def _output_loop(self, replica: int) -> None:
        client = self.clients[replica]
        name = "the engine core process" if len(self.clients) == 1 else \
            f"engine core process of data-parallel rank {replica}"
        chunk = max(1, envs.VLLM_V1_OUTPUT_PROC_CHUNK_SIZE)
        timeout_s = envs.VLLM_ENGINE_ITERATION_TIMEOUT_S
        while self.errored is None:
            message = await client.recv(200)
            now = time.monotonic()
            busy_since = self.busy_since[replica]
            if self.in_flight[replica] and busy_since is not None and now - busy_since > timeout_s:
                self._fail_all(f"an engine step took longer than "
                               f"VLLM_ENGINE_ITERATION_TIMEOUT_S={timeout_s} s")
                break
            if message is None:
                if not client.is_alive():
                    self._fail_all(f"{name} exited "
                                   f"(exit code {getattr(client.worker, 'exitcode', None)})")
                continue
            self.busy_since[replica] = now if self.in_flight[replica] else None
            if isinstance(message, UtilityResult):
                future = self.pending_calls.get(message.call_id)
                if future is not None and not future.done():
                    future.set_result(message.value if message.error is None
                                      else RuntimeError(message.error))
            elif isinstance(message, EngineDead):
                self._fail_all(message.reason)
            elif isinstance(message, EngineCoreOutputs):
                outputs = message.outputs
                for start in range(0, len(outputs), chunk):
                    self._dispatch(outputs[start:start + chunk], client)
                    if start + chunk < len(outputs):
                        await asyncio.sleep(0)

    def _dispatch(self, outputs, client: EngineCoreClient) -> None:
        results, to_stop = self.output_processor.process(outputs)
        self.stats.generation_tokens += sum(len(o.new_token_ids) for o in outputs)
        if to_stop:
            asyncio.get_running_loop().create_task(
                client.send(AbortRequests(to_stop, stopped=True)))
        for result in results:
            if result.finished:
                self._record_finished(result)
            queue = self.queues.get(result.request_id)
            if queue is not None:
                queue.put_nowait(result)

    def _record_finished(self, result: RequestOutput) -> None:
        m = result.metrics
        for completion in result.outputs:
            self.stats.finished[completion.finish_reason or "abort"] += 1
        if m is None or m.first_token_time is None or m.finished_time is None:
            return
        self.stats.ttft.append(m.first_token_time - m.arrival_time)
        self.stats.e2e.append(m.finished_time - m.arrival_time)
        tokens = max(len(c.token_ids) for c in result.outputs)
        if tokens > 1 and m.last_token_time is not None:
            self.stats.tpot.append((m.last_token_time - m.first_token_time) / (tokens - 1))

    def shutdown(self) -> None:
        for task in self._output_task or []:
            task.cancel()
        for client in self.clients:
            client.close()


def _replica_configs(config) -> list:
    """One VllmConfig per engine replica this front end runs: its own rank
    (its CPU share) and its own cache config (each sizes its own cache)."""
    parallel = config.parallel_config
    if parallel.replicas_here == 1:
        return [config]
    return [dataclasses.replace(config, parallel_config=parallel.for_rank(rank),
                                cache_config=dataclasses.replace(config.cache_config))
            for rank in range(parallel.replicas_here)]
