"""Tensor and pipeline parallelism over Ray actors (vLLM's "ray" executor,
distributed_executor_backend="ray"): the same ranks, stages and steps as
the multiprocess executor, with the worker ranks as actors of a Ray
cluster — this machine's, or one joined through RAY_ADDRESS (`ray start
--head` on one node, `ray start --address=<head>:6379` on the others) for
ranks on several machines.

- Placement: one placement group with one bundle of one CPU per rank
  (PACK); bundle 0 sits on the engine core's node (rank 0 runs there).
  VLLM_RAY_BUNDLE_INDICES names the bundle of each rank (inside a
  placement group the caller already holds, else ours).
- Rank 0 runs in the engine core (as with "mp"); with
  VLLM_USE_RAY_SPMD_WORKER=1 every rank is an actor and the engine core
  only schedules. Steps go out as actor calls (an actor runs its calls in
  order); the last stage's first rank returns the step's result.
- VLLM_USE_RAY_COMPILED_DAG=1: the step goes through a Ray compiled graph
  (shared-memory channels, no per-call task submission); it needs the
  SPMD workers, as in vLLM. Its NCCL-channel and overlap variants are for
  GPU tensors between GPU workers: refused here with a line saying so.
- VLLM_RAY_PER_WORKER_GPUS: the GPUs each worker would take; CPU workers
  take none (a log line says it is unused).
- The rendezvous of the ranks' process group is VLLM_HOST_IP (default: this
  node's Ray address) and VLLM_PORT (default: a free port).
- A worker that dies (or raises: it exits, so the failure is never silent)
  fails the step that needed it, with its rank named.
"""
from __future__ import annotations

import logging
import os
import pickle
import traceback

from vllm import envs
from vllm.config import VllmConfig
from vllm.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm.distributed.shm_all_reduce import _process_gone
from vllm.distributed.utils import parse_int_list
from vllm.executor.executor_base import DistributedExecutorBase, RemoteResult
from vllm.executor.multiproc_executor import _join_groups, _rendezvous

logger = logging.getLogger(__name__)

# seconds to wait for the placement group before saying it does not fit
_PLACEMENT_TIMEOUT_S = 60
# a local Ray instance this engine starts: a small object store (steps
# and results are small; the default takes 30% of memory)
_LOCAL_OBJECT_STORE_BYTES = 128 << 20


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("distributed_executor_backend='ray' needs the ray package: "
                          "pip install ray (or use the default 'mp' backend)") from None
    return ray


class RayWorkerWrapper:
    """One rank in a Ray actor: builds its CPUWorker after joining the
    process group, then runs the steps it is sent, in order."""

    def __init__(self) -> None:
        self.worker = None

    def node_ip_and_pid(self) -> tuple[str, int]:
        import ray
        return ray.util.get_node_ip_address(), os.getpid()

    def init_worker(self, config: VllmConfig, eos_token_id: int | None, rank: int,
                    init_method: str, cpu_share: tuple[int, int]) -> int:
        from vllm.distributed import get_world_group
        from vllm.logger import init_logging
        from vllm.worker.cpu_worker import CPUWorker
        init_logging()
        _join_groups(config, rank, init_method)
        self.worker = CPUWorker(config, eos_token_id, cpu_share=cpu_share)
        get_world_group().barrier()  # every rank's model and cache are ready
        return config.cache_config.num_blocks

    def execute_stage(self, payload: bytes) -> ModelRunnerOutput | None:
        try:
            out = self.worker.execute_stage(pickle.loads(payload))
        except BaseException:
            # a rank that fails mid-step would leave its peers waiting in a
            # collective: it exits, and the engine reports a dead worker
            logger.error("Ray worker failed:\n%s", traceback.format_exc())
            os._exit(1)
        return out if self.worker.returns_step_results else None


def bundle_indices(world: int) -> list[int]:
    """Each rank's placement-group bundle: VLLM_RAY_BUNDLE_INDICES (distinct,
    one per rank) or rank r in bundle r."""
    spec = envs.VLLM_RAY_BUNDLE_INDICES
    if not spec:
        return list(range(world))
    indices = parse_int_list("VLLM_RAY_BUNDLE_INDICES", spec, "bundle indices")
    if len(indices) != world or len(set(indices)) != world:
        raise ValueError(f"VLLM_RAY_BUNDLE_INDICES={spec!r} must name {world} distinct "
                         f"bundles, one per rank")
    return indices


def check_ray_settings(world: int) -> None:
    """The Ray variables that cannot apply to these CPU workers, and a bundle
    list of the wrong length: refused before any process or Ray instance
    starts (EngineArgs calls this; whether the bundles exist is known only
    once the placement group does)."""
    if envs.VLLM_USE_RAY_COMPILED_DAG:
        if not envs.VLLM_USE_RAY_SPMD_WORKER:
            raise ValueError("VLLM_USE_RAY_COMPILED_DAG=1 needs VLLM_USE_RAY_SPMD_WORKER=1 "
                             "(every rank a Ray actor), as in vLLM")
        # on by default in vLLM, where it applies to GPU workers only
        if (envs.is_set("VLLM_USE_RAY_COMPILED_DAG_NCCL_CHANNEL")
                and envs.VLLM_USE_RAY_COMPILED_DAG_NCCL_CHANNEL):
            raise ValueError("VLLM_USE_RAY_COMPILED_DAG_NCCL_CHANNEL=1: NCCL channels "
                             "carry GPU tensors between GPU workers; these workers run "
                             "on CPU (unset it, or set it to 0)")
        if envs.VLLM_USE_RAY_COMPILED_DAG_OVERLAP_COMM:
            raise ValueError("VLLM_USE_RAY_COMPILED_DAG_OVERLAP_COMM=1 overlaps GPU "
                             "communication; these workers run on CPU (set it to 0)")
    bundle_indices(world)


class RayExecutor(DistributedExecutorBase):
    def __init__(self, config: VllmConfig, eos_token_id: int | None) -> None:
        ray = _import_ray()
        parallel = config.parallel_config
        super().__init__(parallel.pipeline_parallel_size)
        self.ray = ray
        world, tp = parallel.world_size, parallel.tensor_parallel_size
        self.spmd = envs.VLLM_USE_RAY_SPMD_WORKER
        self.compiled_dag = None
        check_ray_settings(world)
        if envs.is_set("VLLM_RAY_PER_WORKER_GPUS"):
            logger.info("VLLM_RAY_PER_WORKER_GPUS=%s is unused: CPU workers take no GPU",
                        envs.VLLM_RAY_PER_WORKER_GPUS)
        self._connect()
        driver_ip = ray.util.get_node_ip_address()
        placement_group, bundles = self._placement(world, driver_ip)
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        actor_cls = ray.remote(num_cpus=1)(RayWorkerWrapper)
        first_actor_rank = 0 if self.spmd else 1
        self.actors = [actor_cls.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group, placement_group_bundle_index=bundles[rank]),
            name=None).remote() for rank in range(first_actor_rank, world)]
        places = ray.get([a.node_ip_and_pid.remote() for a in self.actors])
        nodes = ([] if self.spmd else [driver_ip]) + [ip for ip, _ in places]
        self.pids = {rank: (ip, pid) for rank, (ip, pid)
                     in zip(range(first_actor_rank, world), places)}
        self.driver_ip = driver_ip
        init_method = _rendezvous(driver_ip if not self.spmd else nodes[0])
        # ranks on one node share its CPUs, each its own equal part
        shares = [(nodes[:r].count(ip), nodes.count(ip)) for r, ip in enumerate(nodes)]
        inits = [a.init_worker.remote(config, eos_token_id, rank, init_method, shares[rank])
                 for a, rank in zip(self.actors, range(first_actor_rank, world))]
        self.worker = None
        if not self.spmd:
            from vllm.distributed import get_world_group
            from vllm.worker.cpu_worker import CPUWorker
            affinity = os.sched_getaffinity(0)
            try:
                _join_groups(config, 0, init_method)
                self.worker = CPUWorker(config, eos_token_id, cpu_share=shares[0])
                get_world_group().barrier()
            except BaseException:
                os.sched_setaffinity(0, affinity)
                self._kill_actors()
                raise
        blocks = ray.get(inits)
        if self.spmd:  # the scheduler's block count comes from the ranks
            config.cache_config.num_blocks = blocks[0]
        # the rank whose execute_stage returns the step's result
        self.result_rank = (self.pp - 1) * tp
        if envs.VLLM_USE_RAY_COMPILED_DAG:
            self.compiled_dag = self._compile_dag()
        logger.info("%d worker ranks on Ray (tensor_parallel_size %d x "
                    "pipeline_parallel_size %d; %s; bundles %s; nodes %s), rendezvous %s",
                    world, tp, self.pp,
                    "every rank an actor" + (", compiled graph" if self.compiled_dag else "")
                    if self.spmd else "rank 0 in the engine core", bundles,
                    sorted(set(nodes)), init_method)

    # ------------------------------------------------------------ set-up
    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        address = envs.raw_value("RAY_ADDRESS")  # Ray's own variable
        if address:
            ray.init(address=address, log_to_driver=False)
            logger.info("joined the Ray cluster at %s", address)
        else:
            # "local": a new instance even where `ray start` ran (join that one
            # with RAY_ADDRESS=auto)
            ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)),
                     include_dashboard=False,
                     object_store_memory=_LOCAL_OBJECT_STORE_BYTES, log_to_driver=False)
            logger.info("started a Ray instance on this machine (set RAY_ADDRESS to join a "
                        "cluster, 'auto' for the one `ray start` started here)")

    def _placement(self, world: int, driver_ip: str):
        """The placement group (the caller's, else a new one of one-CPU
        bundles, bundle 0 on this node) and each rank's bundle index."""
        ray = self.ray
        from ray.util.placement_group import get_current_placement_group, placement_group
        spec = envs.VLLM_RAY_BUNDLE_INDICES
        indices = bundle_indices(world)
        current = get_current_placement_group()
        if current is not None:
            group, available = current, len(current.bundle_specs)
        else:
            bundles = [{"CPU": 1.0} for _ in range(world)]
            bundles[0][f"node:{driver_ip}"] = 0.001  # rank 0's bundle: this node
            group, available = placement_group(bundles, strategy="PACK"), world
            done, _ = ray.wait([group.ready()], timeout=_PLACEMENT_TIMEOUT_S)
            if not done:
                ray.util.remove_placement_group(group)
                cpus = ray.cluster_resources().get("CPU", 0)
                raise RuntimeError(f"Ray cannot place {world} bundles of one CPU (one per rank) "
                                   f"within {_PLACEMENT_TIMEOUT_S} s: the cluster has "
                                   f"{cpus:g} CPUs")
        if max(indices) >= available or min(indices) < 0:
            if current is None:
                ray.util.remove_placement_group(group)
            raise ValueError(f"VLLM_RAY_BUNDLE_INDICES={spec!r}: the placement group has "
                             f"bundles 0..{available - 1}")
        return group, indices

    def _compile_dag(self):
        from ray.dag import InputNode, MultiOutputNode
        with InputNode() as payload:
            dag = MultiOutputNode([a.execute_stage.bind(payload) for a in self.actors])
        return dag.experimental_compile()

    # ------------------------------------------------------------ steps
    def _dispatch(self, sched: SchedulerOutput,
                  payload: bytes) -> ModelRunnerOutput | RemoteResult:
        if self.compiled_dag is not None:
            return RemoteResult(self.compiled_dag.execute(payload))
        refs = [actor.execute_stage.remote(payload) for actor in self.actors]
        if self.spmd:
            return RemoteResult(refs[self.result_rank])
        try:
            out = self.worker.execute_stage(sched)
        except RuntimeError as exc:
            self._raise_if_a_worker_died(exc)
            raise
        return out if self.pp == 1 else RemoteResult(refs[self.result_rank - 1])

    def _fetch(self, remote: RemoteResult) -> ModelRunnerOutput:
        ray = self.ray
        try:
            if self.compiled_dag is not None:
                return ray.get(remote.handle)[self.result_rank]  # every rank's output
            return ray.get(remote.handle)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
            self._raise_if_a_worker_died(exc)
            raise RuntimeError(f"a Ray worker died; the engine cannot go on ({exc})") from exc

    def _raise_if_a_worker_died(self, exc: Exception | None) -> None:
        dead = []
        for rank, (ip, pid) in self.pids.items():
            if ip == self.driver_ip and _process_gone(pid):
                dead.append(f"rank {rank} (pid {pid})")
        if dead:
            detail = f" ({exc})" if exc is not None else ""
            raise RuntimeError(f"Ray worker {', '.join(dead)} died; the engine cannot go "
                               f"on{detail}") from exc

    def shutdown(self) -> None:
        if self.compiled_dag is not None:
            self.compiled_dag.teardown()
            self.compiled_dag = None
        self._kill_actors()
        if self.worker is not None:
            from vllm.distributed import destroy_distributed_environment
            self.worker.finish_sends()
            destroy_distributed_environment()

    def _kill_actors(self) -> None:
        for actor in getattr(self, "actors", []):
            self.ray.kill(actor)
        self.actors = []
