"""Tensor and pipeline parallelism over worker processes (vLLM's "mp"
executor). World rank = pp_rank * tp_size + tp_rank; rank 0 is the engine
core's own worker (first stage, first tensor rank), ranks 1..world-1 are
processes started here, each building its stage's layers with its slice of
every weight, and its own KV cache for them.

Each step rank 0 puts the scheduler's output on every worker's queue (a
pipe fed by a background thread: rank 0 never waits for a busy worker),
then runs its own part. The layers of one stage all-reduce between its
tensor ranks; a stage hands its output to the next one's rank of the same
tensor index (a non-blocking send), and the last stage's first rank returns
the step's result on the result queue. With one stage rank 0 is that rank
and returns it itself.

With several stages the engine core keeps up to pipeline_parallel_size
steps in flight (submit / wait), so every stage has work: the stages run
different micro-batches at the same time.

Rendezvous: torch.distributed over gloo at VLLM_HOST_IP:VLLM_PORT (default
127.0.0.1 and a free port). Processes start as VLLM_WORKER_MULTIPROC_METHOD
says (fork or spawn). A worker dies with its parent (PR_SET_PDEATHSIG); a
worker that dies fails the step that needed it, with its rank named.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import sys

from vllm import envs
from vllm.config import VllmConfig
from vllm.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm.executor.executor_base import DistributedExecutorBase, RemoteResult

logger = logging.getLogger(__name__)

# how often a wait for the last stage's result checks that the workers live
_LIVENESS_POLL_S = 0.5


def _rendezvous(host: str | None = None) -> str:
    """tcp://VLLM_HOST_IP:VLLM_PORT (default: `host` or 127.0.0.1, and a
    free port)."""
    host = envs.VLLM_HOST_IP or host or "127.0.0.1"
    port = envs.VLLM_PORT
    if port is None:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    return f"tcp://{host}:{port}"


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _join_groups(config: VllmConfig, rank: int, init_method: str) -> None:
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    parallel = config.parallel_config
    init_distributed_environment(parallel.world_size, rank, init_method)
    initialize_model_parallel(parallel.tensor_parallel_size, parallel.pipeline_parallel_size)


def _worker_main(config: VllmConfig, eos_token_id: int | None, rank: int, init_method: str,
                 schedules, results) -> None:
    _die_with_parent()
    from vllm.distributed import destroy_distributed_environment, get_world_group
    from vllm.worker.cpu_worker import CPUWorker
    _join_groups(config, rank, init_method)
    worker = CPUWorker(config, eos_token_id)
    get_world_group().barrier()  # every rank's model and cache are ready
    reports = results is not None and worker.returns_step_results
    if results is not None:
        results.cancel_join_thread()  # exit even if rank 0 stopped reading
    while True:
        payload = schedules.get()
        if payload is None:
            break
        sched = pickle.loads(payload)
        out = worker.execute_stage(sched)
        if reports:
            results.put(out)
    worker.finish_sends()
    destroy_distributed_environment()


def _start_children(processes) -> None:
    """Starts the workers, also from a daemonic process (vllm serve's engine
    core is one, and multiprocessing refuses children there). Safe here: a
    worker dies with its parent (PR_SET_PDEATHSIG), and is daemonic itself,
    so the parent's exit takes it down."""
    me = multiprocessing.current_process()
    daemonic = me._config.get("daemon")
    me._config["daemon"] = False
    try:
        for process in processes:
            process.start()
    finally:
        me._config["daemon"] = daemonic


class MultiprocExecutor(DistributedExecutorBase):
    """The engine core's worker when the world has more than one rank: the
    same interface as CPUWorker (execute_model, the model, the cache), plus
    submit / wait for pipelined steps."""

    def __init__(self, config: VllmConfig, eos_token_id: int | None) -> None:
        from vllm.worker.cpu_worker import CPUWorker
        parallel = config.parallel_config
        super().__init__(parallel.pipeline_parallel_size)
        world = parallel.world_size
        init_method = _rendezvous()
        method = envs.VLLM_WORKER_MULTIPROC_METHOD
        context = multiprocessing.get_context(method)
        self.schedules = [context.Queue() for _ in range(1, world)]
        self.results = context.Queue() if self.pp > 1 else None
        self.processes = [context.Process(target=_worker_main, daemon=True,
                                          args=(config, eos_token_id, rank, init_method,
                                                self.schedules[rank - 1], self.results),
                                          name=f"vllm-worker-{rank}")
                          for rank in range(1, world)]
        _start_children(self.processes)
        affinity = os.sched_getaffinity(0)  # rank 0 binds this process's threads
        try:
            _join_groups(config, 0, init_method)
            self.worker = CPUWorker(config, eos_token_id)
            from vllm.distributed import get_world_group
            get_world_group().barrier()
        except BaseException:
            os.sched_setaffinity(0, affinity)
            self._stop_processes(timeout=0)
            from vllm.distributed import destroy_distributed_environment
            destroy_distributed_environment()
            raise
        logger.info("%d worker ranks (tensor_parallel_size %d x pipeline_parallel_size %d; "
                    "%s processes), rendezvous %s", world, parallel.tensor_parallel_size,
                    self.pp, method, init_method)

    def _dispatch(self, sched: SchedulerOutput,
                  payload: bytes) -> ModelRunnerOutput | RemoteResult:
        for schedules in self.schedules:
            schedules.put(payload)
        try:
            out = self.worker.execute_stage(sched)
        except RuntimeError as exc:
            self._raise_if_a_worker_died(exc)
            raise
        # one stage: rank 0's is the result; else the last stage's first rank
        # puts it on the result queue
        return out if self.pp == 1 else RemoteResult()

    def _fetch(self, remote: RemoteResult) -> ModelRunnerOutput:
        while True:
            try:
                return self.results.get(timeout=_LIVENESS_POLL_S)
            except queue.Empty:
                self._raise_if_a_worker_died(None)

    def _raise_if_a_worker_died(self, exc: Exception | None) -> None:
        dead = [f"rank {rank} (exit code {p.exitcode})"
                for rank, p in enumerate(self.processes, start=1) if not p.is_alive()]
        if dead:
            detail = f" ({exc})" if exc is not None else ""
            raise RuntimeError(f"worker {', '.join(dead)} died; the engine cannot go "
                               f"on{detail}") from exc

    def shutdown(self) -> None:
        from vllm.distributed import destroy_distributed_environment
        if not self.processes:
            return
        for schedules in self.schedules:
            schedules.put(None)
        self._stop_processes(timeout=10)
        self.worker.finish_sends()
        destroy_distributed_environment()

    def _stop_processes(self, timeout: float) -> None:
        for process in self.processes:
            process.join(timeout=timeout)
            if process.is_alive():
                process.kill()
                process.join()
        self.processes = []
