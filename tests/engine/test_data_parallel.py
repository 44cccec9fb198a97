"""Data parallelism: engine replicas behind one AsyncLLM, each with its own
engine-core process and share of the CPUs; requests balanced across them,
greedy output equal to one replica's."""
from __future__ import annotations

import asyncio
import os

import pytest

from vllm.config import ParallelConfig
from vllm.engine.arg_utils import EngineArgs
from vllm.engine.async_llm import AsyncLLM
from vllm.sampling_params import SamplingParams
from vllm.worker.cpu_worker import _share_of_cpus

PROMPTS = [f"Question {i}: what is {i} plus {i + 3}? Answer:" for i in range(8)]


def test_parallel_config_follows_vllms_rule(monkeypatch):
    monkeypatch.delenv("VLLM_DP_SIZE", raising=False)
    monkeypatch.delenv("VLLM_DP_RANK", raising=False)
    assert ParallelConfig.resolve(2).replicas_here == 2
    assert ParallelConfig.resolve(1).replicas_here == 1
    # an external launcher: this process is rank 1 of 3, one replica here
    monkeypatch.setenv("VLLM_DP_SIZE", "3")
    monkeypatch.setenv("VLLM_DP_RANK", "1")
    external = ParallelConfig.resolve(1)
    assert (external.data_parallel_size, external.data_parallel_rank) == (3, 1)
    assert external.external and external.replicas_here == 1
    monkeypatch.setenv("VLLM_DP_RANK", "3")
    with pytest.raises(ValueError, match="rank 3 is outside 0..2"):
        ParallelConfig.resolve(1)
    with pytest.raises(ValueError, match="at least 1"):
        ParallelConfig.resolve(0)


def test_ranks_take_equal_disjoint_shares_of_the_cpus():
    allowed = sorted(os.sched_getaffinity(0))
    ranks = min(2, len(allowed))
    shares = [_share_of_cpus(r, ranks) for r in range(ranks)]
    assert sum(shares, []) == allowed[:len(allowed) // ranks * ranks]
    assert len({len(s) for s in shares}) == 1
    assert _share_of_cpus(0, len(allowed) + 1) is None  # more ranks than CPUs


def _generate_all(dp: int) -> tuple[list[list[int]], set[int]]:
    async def run():
        engine = AsyncLLM(EngineArgs(dtype="float32", quantization="none", max_model_len=256,
                                     data_parallel_size=dp), multiprocess=True)
        try:
            params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)

            async def one(i):
                last = None
                async for out in engine.generate(PROMPTS[i], params, f"r{i}"):
                    last = out
                return last.outputs[0].token_ids

            tasks = [asyncio.create_task(one(i)) for i in range(len(PROMPTS))]
            while len(engine.replica_of) < len(PROMPTS):
                await asyncio.sleep(0.01)
            used = set(engine.replica_of.values())
            tokens = await asyncio.gather(*tasks)
            stats = await engine.get_stats()
            assert stats.num_running_reqs == 0 and stats.kv_cache_usage == 0
            return [list(t) for t in tokens], used
        finally:
            engine.shutdown()

    return asyncio.run(run())


# slow: three engine processes with fp32 weights (~30 s); CI's slow step runs it.
@pytest.mark.slow
def test_two_replicas_share_the_requests_and_match_one():
    two, used = _generate_all(2)
    one, _ = _generate_all(1)
    assert used == {0, 1}
    assert two == one


def test_llm_refuses_replicas_with_the_way_to_run_them():
    from vllm import LLM
    with pytest.raises(ValueError, match="vllm serve --data-parallel-size"):
        LLM(data_parallel_size=2, load_format="dummy")
