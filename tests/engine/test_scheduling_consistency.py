"""The same prompts give the same greedy tokens whatever the scheduling: one
at a time, all batched, arriving mid-run, under preemption (a KV cache of a
few blocks), and served from the prefix cache."""
from __future__ import annotations

import pytest

from vllm import LLM, SamplingParams

from tests.engine.conftest import CHAT_PROMPTS, chat_token_ids

PARAMS = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def prompts(smollm_fp32):
    tokenizer = smollm_fp32.get_tokenizer()
    return [{"prompt_token_ids": chat_token_ids(tokenizer, p)} for p in CHAT_PROMPTS[:6]]


@pytest.fixture(scope="module")
def alone(smollm_fp32, prompts):
    smollm_fp32.reset_prefix_cache()
    return [smollm_fp32.generate(p, PARAMS, use_tqdm=False)[0].outputs[0].token_ids
            for p in prompts]


def _tokens(outputs):
    return [o.outputs[0].token_ids for o in outputs]


def test_batched_equals_alone(smollm_fp32, prompts, alone):
    assert _tokens(smollm_fp32.generate(prompts, PARAMS, use_tqdm=False)) == alone


def test_requests_arriving_mid_run(smollm_fp32, prompts, alone):
    engine = smollm_fp32.llm_engine
    done = {}
    for i in range(2):
        engine.add_request(f"mid-{i}", prompts[i], PARAMS)
    for _ in range(5):
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.outputs[0].token_ids
    for i in range(2, len(prompts)):
        engine.add_request(f"mid-{i}", prompts[i], PARAMS)
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.outputs[0].token_ids
    assert [done[f"mid-{i}"] for i in range(len(prompts))] == alone


def test_prefix_cache_hits_give_the_same_tokens(smollm_fp32, prompts, alone):
    engine = smollm_fp32.llm_engine
    smollm_fp32.generate(prompts, PARAMS, use_tqdm=False)
    before = engine.get_stats().prefix_cache_hits
    again = smollm_fp32.generate(prompts, PARAMS, use_tqdm=False)
    assert engine.get_stats().prefix_cache_hits > before
    assert _tokens(again) == alone
    assert any(o.num_cached_tokens > 0 for o in again)


def test_preemption_by_recompute_keeps_outputs(prompts, alone):
    # 10 blocks of 16 tokens cannot hold six ~60-token sequences at once.
    llm = LLM(dtype="float32", quantization="none", max_model_len=256, block_size=16, num_gpu_blocks_override=10)
    outputs = llm.generate(prompts, PARAMS, use_tqdm=False)
    assert llm.llm_engine.get_stats().num_preemptions > 0
    assert _tokens(outputs) == alone
    assert llm.llm_engine.get_stats().kv_cache_usage == 0.0


def test_chunked_prefill_small_budget_equals_alone(prompts, alone):
    llm = LLM(dtype="float32", quantization="none", max_model_len=256, max_num_batched_tokens=16,
              enable_prefix_caching=False)
    assert _tokens(llm.generate(prompts, PARAMS, use_tqdm=False)) == alone
