"""What the multi-rank executors (multiprocess, Ray) share: submitting a
step to every rank, keeping pipelined steps in order, and telling the
pipeline stages that did not sample what the last one sampled.

A subclass sends the pickled step to its remote ranks and runs the local
part (`_dispatch`), and fetches a remote result (`_fetch`). Results come
back in submission order (every rank runs steps in the order sent)."""
from __future__ import annotations

import abc
import pickle
from collections import deque
from concurrent.futures import Future
from typing import Any

from vllm.core.sched_output import ModelRunnerOutput, SchedulerOutput


class RemoteResult:
    """A step whose result a remote rank owes; `handle` is the subclass's."""

    def __init__(self, handle: Any = None) -> None:
        self.handle = handle


class DistributedExecutorBase(abc.ABC):
    def __init__(self, pipeline_parallel_size: int) -> None:
        self.pp = pipeline_parallel_size
        self.pending: deque[tuple[Future, RemoteResult]] = deque()
        self.sampled: dict[str, int] = {}  # tokens the other stages have not been told
        self.unsent_finished: set[str] = set()
        self.unsent_preempted: set[str] = set()

    def __getattr__(self, name: str):
        # model, kv_caches, runner, block_bytes(), ...: those of rank 0's
        # worker (self.worker), where rank 0 runs in this process
        worker = self.__dict__.get("worker")
        if worker is None:
            raise AttributeError(name)
        return getattr(worker, name)

    @property
    def max_concurrent_batches(self) -> int:
        """Steps the engine core may keep in flight: one per stage."""
        return self.pp

    def execute_model(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        return self.wait(self.submit(sched))

    def submit(self, sched: SchedulerOutput) -> Future:
        """Send the step to every rank and run the local part; the result
        comes from wait()."""
        future: Future = Future()
        if self.pp > 1 and sched.total_num_scheduled_tokens == 0:
            # nothing to run: what the runners must drop goes with the next step
            self.unsent_finished |= sched.finished_req_ids
            self.unsent_preempted |= sched.preempted_req_ids
            future.set_result(ModelRunnerOutput({}))
            return future
        if self.pp > 1:
            sched.finished_req_ids = sched.finished_req_ids | self.unsent_finished
            sched.preempted_req_ids = sched.preempted_req_ids | self.unsent_preempted
            sched.sampled_token_ids, self.sampled = self.sampled, {}
            self.unsent_finished, self.unsent_preempted = set(), set()
        # pickled now, not later by a transport's thread: the scheduler goes
        # on changing the lists this step refers to
        payload = pickle.dumps(sched, protocol=pickle.HIGHEST_PROTOCOL)
        out = self._dispatch(sched, payload)
        if isinstance(out, RemoteResult):
            self.pending.append((future, out))
        else:
            future.set_result(out)
        return future

    def wait(self, future: Future) -> ModelRunnerOutput:
        """The step's result (and those of the steps submitted before it)."""
        while not future.done():
            pending, remote = self.pending[0]
            out = self._fetch(remote)
            self.pending.popleft()
            if self.pp > 1:
                self.sampled.update(out.sampled_token_ids)
            pending.set_result(out)
        return future.result()

    @abc.abstractmethod
    def _dispatch(self, sched: SchedulerOutput,
                  payload: bytes) -> ModelRunnerOutput | RemoteResult:
        """Send `payload` to the remote ranks and run the local part: the
        result when it is here, else a RemoteResult to _fetch."""

    @abc.abstractmethod
    def _fetch(self, remote: RemoteResult) -> ModelRunnerOutput:
        """The result a remote rank owes for this step."""
