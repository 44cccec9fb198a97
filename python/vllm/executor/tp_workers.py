"""Tensor parallelism over worker processes (vLLM's "mp" executor): rank 0
is the engine core's own worker; ranks 1..tp-1 are processes started here,
each building the same model with its slice of every weight and its own KV
cache. Every step rank 0 broadcasts the scheduler's output, every rank runs
it (the layers all-reduce between them), and rank 0's result is the step's.

Rendezvous: torch.distributed over gloo at VLLM_HOST_IP:VLLM_PORT (default
127.0.0.1 and a free port). Processes start as VLLM_WORKER_MULTIPROC_METHOD
says (fork or spawn). A worker dies with its parent (PR_SET_PDEATHSIG); a
worker that dies makes rank 0's next collective fail, and with it the step.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys

from vllm import envs
from vllm.config import VllmConfig
from vllm.core.sched_output import ModelRunnerOutput, SchedulerOutput

logger = logging.getLogger(__name__)


def _rendezvous() -> str:
    host = envs.VLLM_HOST_IP or "127.0.0.1"
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


def _join_groups(tp: int, rank: int, init_method: str) -> None:
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    init_distributed_environment(tp, rank, init_method)
    initialize_model_parallel(tp, 1)


def _worker_main(config: VllmConfig, eos_token_id: int | None, rank: int,
                 init_method: str) -> None:
    _die_with_parent()
    from vllm.distributed import destroy_distributed_environment, get_tp_group
    from vllm.worker.cpu_worker import CPUWorker
    _join_groups(config.parallel_config.tensor_parallel_size, rank, init_method)
    worker = CPUWorker(config, eos_token_id)
    group = get_tp_group()
    group.barrier()  # every rank's model and cache are ready
    while True:
        sched = group.broadcast_object(None, src=0)
        if sched is None:
            break
        worker.execute_model(sched)
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


class TensorParallelWorkers:
    """The engine core's worker when tensor_parallel_size > 1: the same
    interface as CPUWorker (execute_model, the model, the cache)."""

    def __init__(self, config: VllmConfig, eos_token_id: int | None) -> None:
        from vllm.distributed import get_tp_group
        from vllm.worker.cpu_worker import CPUWorker
        tp = config.parallel_config.tensor_parallel_size
        init_method = _rendezvous()
        method = envs.VLLM_WORKER_MULTIPROC_METHOD
        context = multiprocessing.get_context(method)
        self.processes = [context.Process(target=_worker_main, daemon=True,
                                          args=(config, eos_token_id, rank, init_method),
                                          name=f"vllm-tp-worker-{rank}")
                          for rank in range(1, tp)]
        _start_children(self.processes)
        affinity = os.sched_getaffinity(0)  # rank 0 binds this process's threads
        try:
            _join_groups(tp, 0, init_method)
            self.worker = CPUWorker(config, eos_token_id)
            self.group = get_tp_group()
            self.group.barrier()
        except BaseException:
            os.sched_setaffinity(0, affinity)
            self._stop_processes(timeout=0)
            from vllm.distributed import destroy_distributed_environment
            destroy_distributed_environment()
            raise
        logger.info("tensor parallelism: %d ranks (%s processes), rendezvous %s", tp, method,
                    init_method)

    def __getattr__(self, name: str):
        # model, kv_caches, runner, block_bytes(), ...: rank 0's
        worker = self.__dict__.get("worker")
        if worker is None:
            raise AttributeError(name)
        return getattr(worker, name)

    def execute_model(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        try:
            self.group.broadcast_object(sched, src=0)
            return self.worker.execute_model(sched)
        except RuntimeError as exc:
            dead = [f"rank {rank} (exit code {p.exitcode})"
                    for rank, p in enumerate(self.processes, start=1) if not p.is_alive()]
            if not dead:
                raise
            raise RuntimeError(f"tensor-parallel worker {', '.join(dead)} died; the engine "
                               f"cannot go on ({exc})") from exc

    def shutdown(self) -> None:
        from vllm.distributed import destroy_distributed_environment
        if not self.processes:
            return
        try:
            self.group.broadcast_object(None, src=0)
        except RuntimeError:
            pass  # a worker already gone
        self._stop_processes(timeout=10)
        destroy_distributed_environment()

    def _stop_processes(self, timeout: float) -> None:
        for process in self.processes:
            process.join(timeout=timeout)
            if process.is_alive():
                process.kill()
                process.join()
        self.processes = []
