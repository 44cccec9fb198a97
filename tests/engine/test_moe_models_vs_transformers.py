"""MoE families against transformers on tiny random checkpoints it wrote
(tests/engine/moe_checkpoints.py): fp32 logprobs at every prompt position
within 1e-4 of transformers' log_softmax, in one chunk and in chunks of 5,
and greedy generations token-identical (a step where transformers' own top
two logits lie within 1e-3 counts as a tie)."""
from __future__ import annotations

import pytest
import torch

from tests.engine.moe_checkpoints import ARCHS, save_random_moe
from vllm import LLM, SamplingParams


@pytest.fixture(scope="module")
def smollm_tokenizer():
    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    return load_gguf_tokenizer(default_model_path())


@pytest.fixture(scope="module", params=list(ARCHS))
def moe_checkpoint(request, tmp_path_factory, smollm_tokenizer):
    folder = tmp_path_factory.mktemp(request.param)
    model = save_random_moe(request.param, folder, smollm_tokenizer)
    return request.param, folder, model


def _prompt(length: int, vocab: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (length,), generator=generator).tolist()


@pytest.mark.parametrize("budget", [None, 5])
def test_prompt_logprobs_match(moe_checkpoint, budget, smollm_tokenizer):
    arch, folder, hf_model = moe_checkpoint
    llm = LLM(str(folder), dtype="float32", max_num_batched_tokens=budget,
              enable_prefix_caching=False)
    prompt = _prompt(23, len(smollm_tokenizer), 11)
    out = llm.generate({"prompt_token_ids": prompt},
                       SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=2),
                       use_tqdm=False)[0]
    with torch.no_grad():
        expected = hf_model(torch.tensor([prompt])).logits[0].float().log_softmax(-1)
    for pos in range(1, len(prompt)):
        got = out.prompt_logprobs[pos]
        assert got[prompt[pos]].logprob == pytest.approx(
            float(expected[pos - 1, prompt[pos]]), abs=1e-4), (arch, pos)
        top = expected[pos - 1].topk(2)
        for token, value in zip(top.indices.tolist(), top.values.tolist()):
            assert got[token].logprob == pytest.approx(float(value), abs=1e-4), (arch, pos)
    assert out.outputs[0].token_ids == [int(expected[-1].argmax())]


def test_greedy_generation_matches(moe_checkpoint, smollm_tokenizer):
    arch, folder, hf_model = moe_checkpoint
    llm = LLM(str(folder), dtype="float32", max_num_batched_tokens=64)
    prompts = [_prompt(n, len(smollm_tokenizer), seed) for seed, n in enumerate((9, 17, 30))]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
                        use_tqdm=False)
    for prompt, out in zip(prompts, outs):
        ours = out.outputs[0].token_ids
        ids = torch.tensor([prompt])
        with torch.no_grad():
            for step, token in enumerate(ours):
                logits = hf_model(ids).logits[0, -1]
                top2 = logits.topk(2).values
                theirs = int(logits.argmax())
                if token != theirs:
                    assert float(top2[0] - top2[1]) < 1e-3, (arch, step, token, theirs)
                ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
