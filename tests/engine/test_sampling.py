"""Sampling semantics on the real model: seeds, top-k, n, stops, min/max
tokens, logits processors; and the sampler's penalties against a direct
formula."""
from __future__ import annotations

import pytest
import torch

from vllm import SamplingParams
from vllm.sample.sampler import Sampler, SamplingState

from tests.engine.conftest import chat_token_ids


@pytest.fixture(scope="module")
def prompt(smollm_fp32):
    return {"prompt_token_ids": chat_token_ids(smollm_fp32.get_tokenizer(),
                                               "Tell me a short story about a fox.")}


def _tokens(llm, prompts, params):
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]


def test_seeded_sampling_is_reproducible_regardless_of_batch(smollm_fp32, prompt):
    seeded = SamplingParams(temperature=0.9, top_p=0.95, seed=1234, max_tokens=24)
    alone = _tokens(smollm_fp32, [prompt], seeded)[0]
    others = SamplingParams(temperature=1.0, max_tokens=30)
    other_prompt = {"prompt_token_ids": prompt["prompt_token_ids"][:-3]}
    batched = _tokens(smollm_fp32, [other_prompt, prompt, other_prompt],
                      [others, seeded, others])[1]
    assert batched == alone
    different_seed = _tokens(smollm_fp32, [prompt], seeded.clone(seed=99))[0]
    assert different_seed != alone


def test_top_k_1_equals_greedy(smollm_fp32, prompt):
    greedy = _tokens(smollm_fp32, [prompt], SamplingParams(temperature=0, max_tokens=20))
    top1 = _tokens(smollm_fp32, [prompt], SamplingParams(temperature=1.3, top_k=1,
                                                         max_tokens=20))
    assert top1 == greedy


def test_n_samples_are_distinct_and_counted(smollm_fp32, prompt):
    out = smollm_fp32.generate(prompt, SamplingParams(n=3, temperature=1.0, seed=5,
                                                      max_tokens=16), use_tqdm=False)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1


def test_stop_string_is_trimmed_and_reported(smollm_fp32):
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    free = smollm_fp32.chat(messages, SamplingParams(temperature=0, max_tokens=40),
                            use_tqdm=False)[0].outputs[0].text
    assert "5" in free
    stop = "5"
    out = smollm_fp32.chat(messages, SamplingParams(temperature=0, max_tokens=40, stop=[stop]),
                           use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == free[:free.index(stop)]
    kept = smollm_fp32.chat(messages, SamplingParams(temperature=0, max_tokens=40, stop=[stop],
                                                     include_stop_str_in_output=True),
                            use_tqdm=False)[0].outputs[0]
    assert kept.text == free[:free.index(stop) + 1]


def test_stop_token_ids_min_and_max_tokens(smollm_fp32, prompt):
    greedy = _tokens(smollm_fp32, [prompt], SamplingParams(temperature=0, max_tokens=30))[0]
    stop_id = greedy[5]
    out = smollm_fp32.generate(prompt, SamplingParams(temperature=0, max_tokens=30,
                                                      stop_token_ids=[stop_id]),
                               use_tqdm=False)[0].outputs[0]
    assert out.token_ids == greedy[:greedy.index(stop_id) + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop_id
    capped = smollm_fp32.generate(prompt, SamplingParams(temperature=0, max_tokens=7),
                                  use_tqdm=False)[0].outputs[0]
    assert len(capped.token_ids) == 7 and capped.finish_reason == "length"
    eos = smollm_fp32.get_tokenizer().eos_token_id
    forced = smollm_fp32.chat([{"role": "user", "content": "Say OK."}],
                              SamplingParams(temperature=0, min_tokens=12, max_tokens=14),
                              use_tqdm=False)[0].outputs[0]
    assert len(forced.token_ids) >= 12 and eos not in forced.token_ids[:12]


def test_logits_processors_run_in_order_and_in_a_thread_pool(smollm_fp32, prompt, monkeypatch):
    calls = []

    def force_token(output_ids, logits):
        calls.append(len(output_ids))
        logits[:] = float("-inf")
        logits[42] = 0.0
        return logits

    out = smollm_fp32.generate(prompt, SamplingParams(temperature=0.7, max_tokens=5,
                                                      logits_processors=[force_token]),
                               use_tqdm=False)[0].outputs[0]
    assert out.token_ids == [42] * 5 and calls == [0, 1, 2, 3, 4]

    from vllm.sample.sampler import Sampler as SamplerClass
    sampler = SamplerClass(processor_threads=2)
    states = [SamplingState.create(SamplingParams(temperature=0, logits_processors=[
        lambda prompt_ids, out_ids, logits, t=t: torch.where(
            torch.arange(logits.shape[0]) == t, 0.0, float("-inf"))]), [1], [], 2)
        for t in (7, 9, 11)]
    tokens, _ = sampler(torch.zeros(3, 50), states)
    assert tokens == [7, 9, 11]


def test_bad_words_never_appear(smollm_fp32):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    free = smollm_fp32.chat(messages, SamplingParams(temperature=0, max_tokens=20),
                            use_tqdm=False)[0].outputs[0].text
    assert "Paris" in free
    banned = smollm_fp32.chat(messages, SamplingParams(temperature=0, max_tokens=20,
                                                       bad_words=["Paris"]),
                              use_tqdm=False)[0].outputs[0].text
    assert "Paris" not in banned and banned


def test_penalties_match_their_definition():
    vocab = 20
    logits = torch.randn(1, vocab)
    prompt, outputs = [1, 2, 3], [3, 3, 4, 5]
    params = SamplingParams(temperature=0, repetition_penalty=1.3, frequency_penalty=0.5,
                            presence_penalty=0.25)
    state = SamplingState.create(params, prompt, outputs, None)
    expected = logits[0].clone()
    for t in set(prompt + outputs):  # repetition: divide positives, multiply negatives
        expected[t] = expected[t] / 1.3 if expected[t] > 0 else expected[t] * 1.3
    for t in set(outputs):
        expected[t] -= 0.5 * outputs.count(t) + 0.25
    tokens, _ = Sampler()(logits.clone(), [state])
    assert tokens == [int(expected.argmax())]
    from vllm.sample.sampler import _apply_penalties
    row = logits[0].clone()
    _apply_penalties(state, row)
    torch.testing.assert_close(row, expected)


def _argmax_calls(monkeypatch) -> list[int]:
    """Counts the sampler's calls of the greedy_argmax kernel (rows per call)."""
    import vllm.sample.sampler as sampler_module
    calls: list[int] = []
    real = sampler_module.ops.greedy_argmax

    def counting(logits):
        calls.append(logits.shape[0])
        return real(logits)

    monkeypatch.setattr(sampler_module.ops, "greedy_argmax", counting)
    return calls


@pytest.mark.skipif(not hasattr(torch.ops._C, "greedy_argmax"), reason="CPU build only")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_plain_greedy_rows_take_the_argmax_kernel(monkeypatch, dtype):
    calls = _argmax_calls(monkeypatch)
    logits = (torch.randn(5, 1000) * 6).to(dtype)
    states = [SamplingState.create(SamplingParams(temperature=0, max_tokens=4), [1], [], 2)
              for _ in range(5)]
    tokens, logprobs = Sampler()(logits, states)
    assert calls == [5]
    assert tokens == logits.float().argmax(-1).tolist() and logprobs == [None] * 5


@pytest.mark.parametrize("kwargs", [
    dict(temperature=0.7), dict(logprobs=2), dict(min_tokens=3, max_tokens=8),
    dict(repetition_penalty=1.2), dict(frequency_penalty=0.5), dict(presence_penalty=0.5),
    dict(bad_words=["fox"]), dict(logits_processors=[lambda out, row: row]),
], ids=lambda kw: next(iter(kw)))
def test_a_row_that_changes_its_logits_keeps_the_full_sampler(monkeypatch, kwargs):
    # one such row in the batch: every row goes the torch way (fp32 logits)
    calls = _argmax_calls(monkeypatch)
    params = SamplingParams(max_tokens=kwargs.pop("max_tokens", 4), seed=0, **kwargs)
    if params.bad_words:
        params.bad_words_token_ids = [[7]]
    plain = SamplingState.create(SamplingParams(temperature=0, max_tokens=4), [1], [], 2)
    other = SamplingState.create(params, [1], [], 2)
    logits = torch.randn(2, 50, dtype=torch.bfloat16)
    tokens, _ = Sampler()(logits, [plain, other])
    assert calls == []
    assert tokens[0] == int(logits[0].float().argmax())


@pytest.mark.parametrize("kwargs, reason", [
    (dict(temperature=-0.5), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_k=-3), "top_k"),
    (dict(min_p=1.5), "min_p"),
    (dict(n=0), "n must be"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(min_tokens=5, max_tokens=2), "min_tokens"),
    (dict(presence_penalty=3.0), "presence_penalty"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(logprobs=-1), "logprobs"),
    (dict(stop=[""]), "stop"),
    (dict(n=2, best_of=3), "best_of"),
])
def test_invalid_sampling_params_raise_value_error(kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        SamplingParams(**kwargs)
