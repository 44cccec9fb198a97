"""The scheduler and block pool without a model: token budgets, chunking,
prefix-cache hits and LRU eviction, preemption, and block accounting."""
from __future__ import annotations

from vllm.config import SchedulerConfig
from vllm.core.block_hash import BlockKey, block_digest
from vllm.core.block_pool import BlockPool
from vllm.core.request import Request, RequestStatus
from vllm.core.scheduler import Scheduler
from vllm.core.sched_output import ModelRunnerOutput
from vllm.sampling_params import SamplingParams

BS = 4


def make_scheduler(num_blocks=64, budget=64, max_seqs=8, caching=True):
    return Scheduler(SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=max_seqs,
                                     max_model_len=256), num_blocks, BS, caching)


def request(rid, tokens, max_tokens=4):
    return Request(rid, tokens, SamplingParams(temperature=0, max_tokens=max_tokens,
                                               ignore_eos=True), eos_token_id=0)


def run_step(scheduler, token=7):
    """Schedule, 'sample' `token` for every request that completed its known tokens."""
    out = scheduler.schedule()
    sampled = {rid: token for rid in out.num_scheduled_tokens
               if scheduler.requests[rid].num_computed_tokens
               == scheduler.requests[rid].num_tokens}
    scheduler.update_from_output(out, ModelRunnerOutput(sampled))
    return out


def test_budget_splits_a_long_prompt_into_chunks_and_decodes_share_steps():
    s = make_scheduler(budget=10)
    s.add_request(request("a", list(range(1, 24))))  # 23 tokens: 10 + 10 + 3
    chunks = [run_step(s).num_scheduled_tokens["a"] for _ in range(3)]
    assert chunks == [10, 10, 3]
    s.add_request(request("b", list(range(100, 106))))
    out = run_step(s)
    assert out.num_scheduled_tokens == {"a": 1, "b": 6}  # a decode and a prefill together


def test_max_num_seqs_limits_admission():
    s = make_scheduler(max_seqs=2)
    for i in range(3):
        s.add_request(request(str(i), [1, 2, 3]))
    out = run_step(s)
    assert list(out.num_scheduled_tokens) == ["0", "1"] and len(s.waiting) == 1


def test_prefix_hits_share_blocks_and_leave_one_token_to_compute():
    s = make_scheduler()
    prompt = list(range(1, 13))  # exactly 3 blocks
    s.add_request(request("a", prompt))
    run_step(s)
    s.add_request(request("b", prompt))
    out = run_step(s)
    # two full blocks hit; the last block is recomputed for its logits
    assert out.num_scheduled_tokens["b"] == 4
    assert s.requests["b"].num_cached_tokens == 8
    assert s.kv.req_blocks["a"][:2] == s.kv.req_blocks["b"][:2]
    assert all(b.ref_cnt == 2 for b in s.kv.req_blocks["b"][:2])


def test_freed_cached_blocks_are_reused_least_recently_freed_first():
    pool = BlockPool(4, enable_caching=True)
    blocks = pool.take(4)
    keys = [BlockKey(None, None, (i,)) for i in range(4)]
    for block, key in zip(blocks, keys):
        pool.mark_cached(block, block_digest(key), key)
    pool.release([blocks[2]])
    pool.release([blocks[0]])
    assert pool.lookup(block_digest(keys[2]), keys[2]) is blocks[2]
    (new,) = pool.take(1)
    # evicted, oldest first
    assert new is blocks[2] and pool.lookup(block_digest(keys[2]), keys[2]) is None
    assert pool.lookup(block_digest(keys[0]), keys[0]) is blocks[0]
    pool.touch([blocks[0]])  # a hit takes it back off the free list
    assert pool.num_free_blocks == 0 and blocks[0].ref_cnt == 1


def test_preemption_frees_the_newest_request_and_it_resumes():
    s = make_scheduler(num_blocks=5, caching=False)
    s.add_request(request("a", list(range(1, 9)), max_tokens=8))  # 2 blocks, grows to 4
    s.add_request(request("b", list(range(20, 28)), max_tokens=8))
    run_step(s)
    preempted = set()
    for _ in range(20):
        if not s.has_unfinished_requests():
            break
        out = run_step(s)
        preempted |= out.preempted_req_ids
        used = sum(len(v) for v in s.kv.req_blocks.values())
        assert used + s.kv.pool.num_free_blocks == 5
    assert preempted == {"b"}
    assert not s.has_unfinished_requests() and s.kv.pool.num_free_blocks == 5


def test_abort_returns_blocks_and_tells_the_runner():
    s = make_scheduler()
    s.add_request(request("a", list(range(1, 10))))
    run_step(s)
    assert s.kv.pool.num_free_blocks < 64
    s.finish_requests("a", RequestStatus.FINISHED_ABORTED)
    assert s.kv.pool.num_free_blocks == 64
    assert "a" in s.schedule().finished_req_ids


# ---------------------------------------------------------------- pipelined
def sampled_for(scheduler, out, token=7):
    """What the last stage would return for step `out`."""
    return ModelRunnerOutput({rid: token for rid in out.num_scheduled_tokens
                              if scheduler.requests[rid].num_computed_tokens
                              == scheduler.requests[rid].num_tokens})


def test_micro_batches_split_the_live_requests_between_steps_in_flight():
    s = Scheduler(SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8,
                                  max_model_len=256), 64, BS, True, micro_batches=2)
    for i in range(4):
        s.add_request(request(str(i), [1, 2, 3], max_tokens=3))
    first = s.schedule()  # nothing in flight yet: half of the four
    first_result = sampled_for(s, first)
    second = s.schedule()  # the other half, while the first is in flight
    assert list(first.num_scheduled_tokens) == ["0", "1"]
    assert list(second.num_scheduled_tokens) == ["2", "3"]
    second_result = sampled_for(s, second)
    # both in flight, their tokens not back: nothing to schedule
    assert s.schedule().total_num_scheduled_tokens == 0
    s.update_from_output(first, first_result)
    third = s.schedule()  # the first half's decodes, the second still in flight
    assert third.num_scheduled_tokens == {"0": 1, "1": 1}
    s.update_from_output(second, second_result)
    assert s.schedule().num_scheduled_tokens == {"2": 1, "3": 1}


def test_requests_in_flight_are_never_preempted():
    s = Scheduler(SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8,
                                  max_model_len=256), 2, BS, False, micro_batches=2)
    s.add_request(request("a", [1, 2, 3, 4], max_tokens=8))  # a full block each
    s.add_request(request("b", [5, 6, 7, 8], max_tokens=8))
    first = s.schedule()  # a alone (its half of the two)
    second = s.schedule()  # b, while a is in flight
    assert (list(first.num_scheduled_tokens), list(second.num_scheduled_tokens)) == (["a"], ["b"])
    assert s.kv.pool.num_free_blocks == 0
    s.update_from_output(first, sampled_for(s, first))
    # a's decode needs a block and none is free. The newest running request,
    # b, is in flight (its step may still write its blocks): not b but a
    # gives way
    third = s.schedule()
    assert third.preempted_req_ids == {"a"} and third.total_num_scheduled_tokens == 0
    assert s.requests["b"].status == RequestStatus.RUNNING
    s.update_from_output(second, sampled_for(s, second))
    fourth = s.schedule()  # b's decode takes the block a gave up
    assert fourth.num_scheduled_tokens == {"b": 1}
