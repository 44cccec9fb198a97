"""The embedded SmolLM2-135M-Instruct against Hugging Face transformers on
the same GGUF weights: greedy fp32 output token for token."""
from __future__ import annotations

import pytest
import torch

from vllm import LLM, SamplingParams

from tests.engine.conftest import CHAT_PROMPTS, chat_token_ids, hf_greedy

NEW_TOKENS = 64


def test_greedy_fp32_is_token_identical_to_transformers(smollm_fp32, hf_smollm):
    tokenizer = smollm_fp32.get_tokenizer()
    prompts = [chat_token_ids(tokenizer, p) for p in CHAT_PROMPTS]
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outputs = smollm_fp32.generate([{"prompt_token_ids": p} for p in prompts], params,
                                   use_tqdm=False)
    # transformers' greedy choice at every position of prompt + our tokens,
    # one forward pass a prompt: equal to our tokens exactly when its own
    # greedy generation would produce them (each step takes the argmax given
    # the tokens before), at a twelfth of generate's cost
    for prompt, text, output in zip(prompts, CHAT_PROMPTS, outputs):
        ours = list(output.outputs[0].token_ids)
        with torch.no_grad():
            logits = hf_smollm(torch.tensor([prompt + ours])).logits[0, len(prompt) - 1:-1]
        assert ours == logits.argmax(-1).tolist(), text
        assert output.outputs[0].finish_reason == "length"


def test_chat_stops_at_end_of_turn_and_text_matches_decode(smollm_fp32):
    outputs = smollm_fp32.chat([{"role": "user", "content": "What is the capital of France?"}],
                               SamplingParams(temperature=0.0, max_tokens=64), use_tqdm=False)
    completion = outputs[0].outputs[0]
    tokenizer = smollm_fp32.get_tokenizer()
    assert completion.finish_reason == "stop"
    assert completion.token_ids[-1] == tokenizer.eos_token_id
    assert "Paris" in completion.text
    assert completion.text == tokenizer.decode(completion.token_ids, skip_special_tokens=True)


def test_bf16_agrees_on_first_tokens_and_stays_coherent(hf_smollm):
    llm = LLM(dtype="bfloat16", quantization="none", max_model_len=512)
    tokenizer = llm.get_tokenizer()
    prompts = [chat_token_ids(tokenizer, p) for p in CHAT_PROMPTS[:4]]
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                           SamplingParams(temperature=0.0, max_tokens=48), use_tqdm=False)
    for prompt, output in zip(prompts, outputs):
        expected = hf_greedy(hf_smollm, prompt, 8)
        assert output.outputs[0].token_ids[:4] == expected[:4]
        words = output.outputs[0].text.split()
        assert len(words) >= 3 and len(set(words)) > len(words) // 3  # no degenerate loop
