"""EngineCore: one step = schedule, execute, update. Owns the scheduler and
the worker; knows nothing of text."""
from __future__ import annotations

import logging
import time
from collections import deque

from vllm import envs
from vllm.config import VllmConfig
from vllm.core.request import Request, RequestStatus
from vllm.core.scheduler import Scheduler
from vllm.core.sched_output import EngineCoreOutput, SchedulerStats
from vllm.profiler import TorchProfiler
from vllm.worker.cpu_worker import CPUWorker

logger = logging.getLogger(__name__)


class BatchSizeLog:
    """VLLM_LOG_BATCHSIZE_INTERVAL > 0: every that many seconds, log how many
    steps ran at each batch size (requests per step) since the last log."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.counts: dict[int, int] = {}
        self.since = time.monotonic()

    def record(self, batch_size: int) -> None:
        self.counts[batch_size] = self.counts.get(batch_size, 0) + 1
        now = time.monotonic()
        if now - self.since >= self.interval_s:
            summary = ", ".join(f"{size}: {n}" for size, n in sorted(self.counts.items()))
            logger.info("batch sizes over the last %.0f s (size: steps): %s",
                        now - self.since, summary)
            self.counts, self.since = {}, now


class EngineCore:
    def __init__(self, config: VllmConfig, eos_token_id: int | None) -> None:
        start = time.perf_counter()
        self.config = config
        parallel = config.parallel_config
        if parallel.world_size > 1 and parallel.distributed_executor_backend == "ray":
            from vllm.executor.ray_executor import RayExecutor
            self.worker = RayExecutor(config, eos_token_id)
        elif parallel.world_size > 1:
            from vllm.executor.multiproc_executor import MultiprocExecutor
            self.worker = MultiprocExecutor(config, eos_token_id)
        elif config.device_config.device == "cuda":
            from vllm.worker.gpu_worker import GPUWorker
            self.worker = GPUWorker(config, eos_token_id)
        else:
            self.worker = CPUWorker(config, eos_token_id)
        # pipeline parallelism: steps in flight, oldest first (one per stage)
        micro_batches = getattr(self.worker, "max_concurrent_batches", 1)
        self.batch_queue = deque() if micro_batches > 1 else None
        cc = config.cache_config
        interval = envs.VLLM_LOG_BATCHSIZE_INTERVAL
        self.batch_log = BatchSizeLog(interval) if interval > 0 else None
        profile_dir = envs.VLLM_TORCH_PROFILER_DIR
        self.profiler = TorchProfiler(profile_dir) if profile_dir else None
        self.scheduler = Scheduler(config.scheduler_config, cc.num_blocks, cc.block_size,
                                   cc.enable_prefix_caching, micro_batches)
        logger.info("engine core ready in %.2f s", time.perf_counter() - start)

    def add_request(self, request: Request) -> None:
        self.scheduler.add_request(request)

    def abort_requests(self, request_ids: list[str],
                       status: RequestStatus = RequestStatus.FINISHED_ABORTED) -> None:
        self.scheduler.finish_requests(request_ids, status)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests() or bool(self.batch_queue)

    def step(self) -> list[EngineCoreOutput]:
        if self.batch_queue is not None:
            return self._step_with_batch_queue()
        if not self.scheduler.has_unfinished_requests():
            return []
        sched = self.scheduler.schedule()
        if self.batch_log is not None:
            self.batch_log.record(len(sched.num_scheduled_tokens))
        result = self.worker.execute_model(sched)
        return self.scheduler.update_from_output(sched, result)

    def _step_with_batch_queue(self) -> list[EngineCoreOutput]:
        """Pipeline parallelism: schedule and submit a new micro-batch while
        the queue has room and there is work; otherwise (or when it is full)
        wait for the oldest step in flight and apply its result. A step
        that only submits returns no outputs."""
        queue = self.batch_queue
        if len(queue) < self.worker.max_concurrent_batches \
                and self.scheduler.has_unfinished_requests():
            sched = self.scheduler.schedule()
            if sched.total_num_scheduled_tokens or not queue:
                if self.batch_log is not None and sched.total_num_scheduled_tokens:
                    self.batch_log.record(len(sched.num_scheduled_tokens))
                queue.append((sched, self.worker.submit(sched)))
                if len(queue) < self.worker.max_concurrent_batches \
                        and sched.total_num_scheduled_tokens:
                    return []
            else:  # nothing schedulable now; its dropped ids go with the next step
                self.worker.submit(sched)
        if not queue:
            return []
        sched, future = queue.popleft()
        return self.scheduler.update_from_output(sched, self.worker.wait(future))

    def stats(self) -> SchedulerStats:
        s = self.scheduler
        pool = s.kv.pool
        return SchedulerStats(len(s.running), len(s.waiting), s.kv_cache_usage(),
                              pool.queries, pool.hits, s.num_preemptions)

    def start_profile(self) -> None:
        if self.profiler is None:
            raise RuntimeError("set VLLM_TORCH_PROFILER_DIR to enable profiling")
        self.profiler.start()

    def stop_profile(self) -> str:
        if self.profiler is None:
            raise RuntimeError("set VLLM_TORCH_PROFILER_DIR to enable profiling")
        return self.profiler.stop()

    def reset_prefix_cache(self) -> bool:
        return self.scheduler.reset_prefix_cache()
