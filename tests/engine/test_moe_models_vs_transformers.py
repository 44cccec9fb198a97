"""MoE families against transformers on tiny random checkpoints it wrote
(tests/engine/moe_checkpoints.py): fp32 logprobs at every prompt position
within 1e-4 of transformers' log_softmax, in one chunk and in chunks of 5,
and greedy generations token-identical (a step where transformers' own top
two logits lie within 1e-3 counts as a tie)."""
from __future__ import annotations

import pytest
import torch

from tests.engine.hf_reference import assert_greedy_agrees, assert_prompt_logprobs_match
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
    assert_prompt_logprobs_match(out, hf_model, prompt, arch)


def test_greedy_generation_matches(moe_checkpoint, smollm_tokenizer):
    arch, folder, hf_model = moe_checkpoint
    llm = LLM(str(folder), dtype="float32", max_num_batched_tokens=64)
    prompts = [_prompt(n, len(smollm_tokenizer), seed) for seed, n in enumerate((9, 17, 30))]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
                        use_tqdm=False)
    for prompt, out in zip(prompts, outs):
        assert_greedy_agrees(hf_model, prompt, out.outputs[0].token_ids, arch)
