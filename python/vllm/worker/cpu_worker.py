"""The CPU worker: places the OpenMP threads, loads the model, sizes and
allocates the paged KV cache, and owns the model runner."""
from __future__ import annotations

import logging
import mmap
import os

import numpy as np
import torch

from vllm import envs, hugepages, malloc_settings
from vllm.attention.kv_cache_layout import block_bytes
from vllm.attention.selector import get_attn_backend
from vllm.config import VllmConfig
from vllm.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm.model_executor.model_loader import get_model
from vllm.sequence import IntermediateTensors
from vllm.worker.model_runner import ModelRunner

logger = logging.getLogger(__name__)


def parse_cpu_list(spec: str) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6]; a clear error for anything else."""
    cpus: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-"))
                if hi < lo:
                    raise ValueError
                cpus.extend(range(lo, hi + 1))
            else:
                cpus.append(int(part))
    except ValueError:
        raise ValueError(f"VLLM_CPU_OMP_THREADS_BIND={spec!r} is not 'all' or a CPU list "
                         "such as '0-3' or '0,2,4'") from None
    return cpus


def _share_of_cpus(rank: int, ranks: int) -> list[int] | None:
    """Rank's equal, contiguous share of the CPUs this process may use (so
    replicas do not run twice as many threads as there are cores)."""
    allowed = sorted(os.sched_getaffinity(0))
    share = len(allowed) // ranks
    if share == 0:
        logger.warning("%d ranks share %d CPUs: threads left to the OS", ranks, len(allowed))
        return None
    return allowed[rank * share:(rank + 1) * share]


def bind_threads(spec: str, rank: int = 0, ranks: int = 1) -> list[int] | None:
    """Apply VLLM_CPU_OMP_THREADS_BIND: 'all' leaves placement to the OS
    (with several ranks, each takes its equal share of the CPUs); a list
    ('0-1', ranks separated by '|') pins this process to those CPUs and runs
    one OpenMP thread on each, each thread bound to its own CPU."""
    if spec.strip() in ("", "all"):
        if ranks == 1:
            return None
        cpus = _share_of_cpus(rank, ranks)
        if cpus is None:
            return None
    else:
        per_rank = spec.split("|")
        if rank >= len(per_rank):
            raise ValueError(f"VLLM_CPU_OMP_THREADS_BIND={spec!r} names {len(per_rank)} "
                             f"rank(s); rank {rank} has none")
        cpus = parse_cpu_list(per_rank[rank])
    allowed = os.sched_getaffinity(0)
    unknown = sorted(set(cpus) - allowed)
    if unknown:
        raise ValueError(f"VLLM_CPU_OMP_THREADS_BIND names CPUs {unknown} this process may "
                         f"not use (allowed: {sorted(allowed)})")
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(len(cpus))
    from vllm import _custom_ops as ops
    ops.init_cpu_threads_env(cpus)
    logger.info("OpenMP threads of rank %d bound to CPUs %s", rank, cpus)
    return cpus


def _lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype,
                huge: bool | None = None) -> torch.Tensor:
    """Zeros that cost nothing until touched: a private anonymous mapping of
    its own (not malloc, whose settings decide whether big blocks are fresh
    zero pages or recycled memory it must clear), so a 4 GiB cache takes
    memory only as it fills. Zeros, not garbage: a kernel reading the tail of
    a half-filled block multiplies by zero weights, and 0 * NaN would poison
    the output. `huge`: the page size (None: the engine's choice)."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS"):
        # the tensor keeps the mapping alive; unmapped when both are gone
        region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        cache = torch.frombuffer(region, dtype=torch.uint8)
    else:
        cache = torch.from_numpy(np.zeros(nbytes, dtype=np.uint8))
    # Before the first touch, so the advice sets every page's size: huge
    # pages (one TLB entry covers 170 blocks of a SmolLM2 layer) unless a
    # fresh one costs ~5 ms to fault in here; small ones override THP
    # "always" (vllm/hugepages.py).
    hugepages.advise(cache, huge=hugepages.kv_cache_on_huge_pages() if huge is None else huge)
    return cache.view(dtype).view(shape)


class CPUWorker:
    def __init__(self, config: VllmConfig, eos_token_id: int | None,
                 cpu_share: tuple[int, int] | None = None) -> None:
        """`cpu_share`: (index, count) of this rank among the ranks sharing
        this machine's CPUs (default: its world rank among all ranks, every
        rank on this machine)."""
        self.config = config
        malloc_settings.keep_freed_memory()
        parallel = config.parallel_config
        # every rank of every replica takes its own share of the CPUs
        if cpu_share is None:
            import torch.distributed as dist
            cpu_share = (dist.get_rank() if parallel.world_size > 1 else 0, parallel.world_size)
        index, count = cpu_share
        self.bound_cpus = bind_threads(envs.VLLM_CPU_OMP_THREADS_BIND,
                                       parallel.data_parallel_rank * count + index,
                                       parallel.data_parallel_size * count)
        mc, cc = config.model_config, config.cache_config
        self.attn_backend = get_attn_backend(config.attention_backend)
        self.model = get_model(mc, self.attn_backend)
        self.kv_caches = self._allocate_kv_cache()
        self.runner = ModelRunner(self.model, cc.block_size, eos_token_id,
                                  envs.VLLM_LOGITS_PROCESSOR_THREADS)
        if parallel.tensor_parallel_size > 1:  # rank 0's sampled tokens are every rank's
            from vllm.distributed.parallel_state import get_tp_group
            self.runner.tp_group = get_tp_group()
        self.pp_group = None
        if parallel.pipeline_parallel_size > 1:
            from vllm.distributed.parallel_state import get_pp_group
            self.pp_group = get_pp_group()
        self._sends: list = []  # (work, tensor) of hand-overs still in flight

    @property
    def returns_step_results(self) -> bool:
        """Whether this rank's execute_stage returns the step's result: the
        first tensor rank of the last pipeline stage."""
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank
        return ((self.pp_group is None or self.pp_group.is_last_rank)
                and get_tensor_model_parallel_rank() == 0)

    def execute_stage(self, sched: SchedulerOutput) -> ModelRunnerOutput | None:
        """This rank's part of a step: with pipeline parallelism, take the
        previous stage's output (except on the first stage) and hand this
        one's to the next (except on the last, which returns the result)."""
        if self.pp_group is None:
            return self.runner.execute(sched)
        intermediate = None
        if not self.pp_group.is_first_rank:
            hidden = torch.empty((sched.total_num_scheduled_tokens,
                                  self.config.model_config.hf_config.hidden_size),
                                 dtype=self.config.model_config.dtype)
            intermediate = IntermediateTensors({"hidden_states": self.pp_group.recv(hidden)})
        out = self.runner.execute(sched, intermediate)
        if self.pp_group.is_last_rank:
            return out
        self._sends = [(work, t) for work, t in self._sends if not work.is_completed()]
        hidden = out["hidden_states"].contiguous()
        self._sends.append((self.pp_group.isend(hidden), hidden))
        return None

    def finish_sends(self) -> None:
        for work, _ in self._sends:
            work.wait()
        self._sends = []

    def block_bytes(self) -> int:
        mc, cc = self.config.model_config, self.config.cache_config
        return block_bytes(self.model.attention_layers(), mc.dtype, cc.block_size)

    def _allocate_kv_cache(self) -> list[tuple[torch.Tensor, ...]]:
        mc, cc = self.config.model_config, self.config.cache_config
        if cc.num_blocks_override is not None:
            num_blocks = cc.num_blocks_override
        else:
            num_blocks = cc.cache_space_bytes // self.block_bytes()
        if self.config.parallel_config.world_size > 1:
            # one block table for every rank: pipeline stages with fewer
            # layers could hold more blocks, the scheduler can use only what
            # every stage has
            from vllm.distributed.parallel_state import get_world_group
            num_blocks = get_world_group().all_reduce_min(num_blocks)
        min_blocks = -(-mc.max_model_len // cc.block_size)
        if num_blocks < min_blocks and cc.num_blocks_override is None:
            raise ValueError(
                f"the KV cache ({cc.cache_space_bytes / (1 << 30):.2f} GiB, {num_blocks} blocks) "
                f"cannot hold one sequence of max_model_len={mc.max_model_len} "
                f"({min_blocks} blocks): raise VLLM_CPU_KVCACHE_SPACE or lower max_model_len")
        cc.num_blocks = num_blocks
        caches = []
        for layer in self.model.attention_layers():
            tensors = tuple(_lazy_zeros(shape, mc.dtype)
                            for shape in layer.cache_shapes(num_blocks, cc.block_size))
            layer.kv_cache = tensors
            caches.append(tensors)
        layers = self.model.attention_layers()
        kind = "MLA latents" if layers and hasattr(layers[0], "latent_dim") else "keys and values"
        logger.info("KV cache: %d blocks of %d tokens (%.2f GiB, %d tokens; %s, %d bytes per "
                    "token) on %s pages", num_blocks, cc.block_size,
                    num_blocks * self.block_bytes() / (1 << 30), num_blocks * cc.block_size,
                    kind, self.block_bytes() // cc.block_size,
                    "huge" if hugepages.kv_cache_on_huge_pages() else
                    "4 KiB (the host reclaims free memory: huge ones fault in slowly)")
        return caches

    def execute_model(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        return self.runner.execute(sched)
