"""Comparisons against a transformers model, shared by the model-family
tests: prompt logprobs at every position, greedy generations step by step
(with transformers' own near-ties excused), and a bf16 run's distance from
fp32 transformers."""
from __future__ import annotations

import pytest
import torch

from vllm import SamplingParams


def assert_prompt_logprobs_match(out, hf_model, prompt: list[int], label, tol: float = 1e-4):
    """`out`: our RequestOutput for `prompt` with prompt_logprobs >= 2 and
    one greedy token: the prompt token's and transformers' top-2 logprobs
    at every position within `tol`, and the greedy token its argmax."""
    with torch.no_grad():
        expected = hf_model(torch.tensor([prompt])).logits[0].float().log_softmax(-1)
    for pos in range(1, len(prompt)):
        got = out.prompt_logprobs[pos]
        assert got[prompt[pos]].logprob == pytest.approx(
            float(expected[pos - 1, prompt[pos]]), abs=tol), (label, pos)
        top = expected[pos - 1].topk(2)
        for token, value in zip(top.indices.tolist(), top.values.tolist()):
            assert got[token].logprob == pytest.approx(float(value), abs=tol), (label, pos)
    assert out.outputs[0].token_ids == [int(expected[-1].argmax())]


def assert_greedy_agrees(hf_model, prompt: list[int], tokens: list[int], label) -> None:
    """Our greedy `tokens` after `prompt` are transformers' argmax at every
    step, except where its own top two logits lie within 1e-3 (a tie)."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for step, token in enumerate(tokens):
            logits = hf_model(ids).logits[0, -1]
            top2 = logits.topk(2).values
            theirs = int(logits.argmax())
            if token != theirs:
                assert float(top2[0] - top2[1]) < 1e-3, (label, step, token, theirs)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)


def prompt_logprob_gap(llm, hf_model, prompt: list[int]) -> float:
    """Largest difference between our prompt-token logprobs (e.g. in bf16)
    and fp32 transformers' over the prompt."""
    out = llm.generate({"prompt_token_ids": prompt},
                       SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=0),
                       use_tqdm=False)[0]
    with torch.no_grad():
        expected = hf_model(torch.tensor([prompt])).logits[0].log_softmax(-1)
    got = torch.tensor([out.prompt_logprobs[i][prompt[i]].logprob for i in range(1, len(prompt))])
    want = expected[torch.arange(len(prompt) - 1), torch.tensor(prompt[1:])]
    return float((got - want).abs().max())
