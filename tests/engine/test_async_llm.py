"""AsyncLLM from Python, with the engine core in a thread
(VLLM_ENABLE_V1_MULTIPROCESSING=0) and in its own process: the same greedy
tokens as the offline LLM, deltas that add up, and aborts that free blocks."""
from __future__ import annotations

import asyncio

import pytest

from vllm import SamplingParams
from vllm.engine.arg_utils import EngineArgs
from vllm.sampling_params import RequestOutputKind

from tests.engine.conftest import chat_token_ids


@pytest.mark.parametrize("multiprocessing", ["0", "1"])
def test_async_llm_matches_offline_and_aborts_cleanly(monkeypatch, smollm_fp32,
                                                      multiprocessing):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", multiprocessing)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm.engine.async_llm import AsyncLLM
    prompt = {"prompt_token_ids": chat_token_ids(smollm_fp32.get_tokenizer(),
                                                 "Name three rivers.")}
    greedy = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    expected = smollm_fp32.generate(prompt, greedy, use_tqdm=False)[0].outputs[0].token_ids

    async def main():
        engine = AsyncLLM(EngineArgs(dtype="float32", quantization="none", max_model_len=1024))
        assert engine.client.multiprocess == (multiprocessing == "1")
        try:
            final = None
            async for out in engine.generate(prompt, greedy, "a"):
                final = out
            deltas = []
            async for out in engine.generate(
                    prompt, greedy.clone(output_kind=RequestOutputKind.DELTA), "b"):
                deltas.extend(out.outputs[0].token_ids)
            stream = engine.generate(prompt, SamplingParams(max_tokens=500, ignore_eos=True),
                                     "c")
            async for _ in stream:
                break
            await stream.aclose()  # a client that went away
            for _ in range(50):
                stats = await engine.get_stats()
                if stats.num_running_reqs == 0:
                    break
                await asyncio.sleep(0.05)
            return final, deltas, stats
        finally:
            engine.shutdown()

    final, deltas, stats = asyncio.run(main())
    assert final.finished and final.outputs[0].token_ids == expected
    assert deltas == expected
    assert stats.num_running_reqs == 0 and stats.kv_cache_usage == 0.0
