"""DeepSeek-V2 / V3 with MLA against transformers on tiny random checkpoints
it wrote (tests/engine/deepseek_checkpoints.py): fp32 logprobs at every
prompt position within 1e-4 of transformers' log_softmax, in one chunk and
in chunks of 5, and greedy generations token-identical (a step where
transformers' own top two logits lie within 1e-3 counts as a tie); the same
with VLLM_MLA_DISABLE=1 (per-head cache, ordinary kernels) and with
VLLM_MLA_PERFORM_MATRIX_ABSORPTION=0. Then what every model has: prefix
caching, preemption, bf16, the latent cache's size, and errors at load for
head dims the kernels cannot take."""
from __future__ import annotations

import json

import pytest
import torch

from tests.engine.deepseek_checkpoints import ARCHS, save_random_deepseek
from tests.engine.hf_reference import (assert_greedy_agrees, assert_prompt_logprobs_match,
                                       prompt_logprob_gap)
from vllm import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
MODES = {"mla": {}, "mla_not_absorbed": {"VLLM_MLA_PERFORM_MATRIX_ABSORPTION": "0"},
         "mla_disabled": {"VLLM_MLA_DISABLE": "1"}}


@pytest.fixture(scope="module")
def tokenizer():
    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    return load_gguf_tokenizer(default_model_path())


@pytest.fixture(scope="module", params=list(ARCHS))
def checkpoint(request, tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp(request.param)
    return request.param, folder, save_random_deepseek(request.param, folder, tokenizer)


def _prompt(length: int, vocab: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (length,), generator=generator).tolist()


def _llm(folder, monkeypatch, mode: str, **kwargs) -> LLM:
    for name, value in MODES[mode].items():
        monkeypatch.setenv(name, value)
    return LLM(str(folder), dtype=kwargs.pop("dtype", "float32"), **kwargs)


# chunks of 5 (chunked prefill over the latent cache) in the default mode
@pytest.mark.parametrize("mode,budget", [(mode, None) for mode in MODES] + [("mla", 5)])
def test_prompt_logprobs_match(checkpoint, mode, budget, tokenizer, monkeypatch):
    arch, folder, hf_model = checkpoint
    llm = _llm(folder, monkeypatch, mode, max_num_batched_tokens=budget,
               enable_prefix_caching=False)
    prompt = _prompt(23, len(tokenizer), 11)
    out = llm.generate({"prompt_token_ids": prompt},
                       SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=2),
                       use_tqdm=False)[0]
    assert_prompt_logprobs_match(out, hf_model, prompt, (arch, mode))


@pytest.mark.parametrize("mode", list(MODES))
def test_greedy_generation_matches(checkpoint, mode, tokenizer, monkeypatch):
    arch, folder, hf_model = checkpoint
    llm = _llm(folder, monkeypatch, mode, max_num_batched_tokens=64)
    prompts = [_prompt(n, len(tokenizer), seed) for seed, n in enumerate((9, 17, 70))]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], GREEDY, use_tqdm=False)
    for prompt, out in zip(prompts, outs):
        assert_greedy_agrees(hf_model, prompt, out.outputs[0].token_ids, (arch, mode))


def _shared_prefix_prompts(vocab: int) -> list[dict]:
    generator = torch.Generator().manual_seed(5)
    prefix = torch.randint(0, vocab, (40,), generator=generator).tolist()
    return [{"prompt_token_ids": prefix + torch.randint(0, vocab, (8 + 5 * i,),
                                                        generator=generator).tolist()}
            for i in range(4)]


def _tokens(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


def test_prefix_cache_and_preemption_keep_outputs(tokenizer, tmp_path, monkeypatch):
    save_random_deepseek("v3", tmp_path, tokenizer, seed=4)
    prompts = _shared_prefix_prompts(len(tokenizer))
    alone = LLM(str(tmp_path), dtype="float32", enable_prefix_caching=False)
    expected = [_tokens(alone.generate(p, GREEDY, use_tqdm=False))[0] for p in prompts]
    del alone
    cached = LLM(str(tmp_path), dtype="float32")
    assert _tokens(cached.generate(prompts, GREEDY, use_tqdm=False)) == expected
    before = cached.llm_engine.get_stats().prefix_cache_hits
    assert _tokens(cached.generate(prompts, GREEDY, use_tqdm=False)) == expected
    assert cached.llm_engine.get_stats().prefix_cache_hits > before
    del cached
    tight = LLM(str(tmp_path), dtype="float32", block_size=16, num_gpu_blocks_override=8,
                max_model_len=128, max_num_batched_tokens=32)
    outputs = tight.generate(prompts, GREEDY, use_tqdm=False)
    assert tight.llm_engine.get_stats().num_preemptions > 0
    assert _tokens(outputs) == expected


def test_latent_cache_holds_one_latent_per_token(tokenizer, tmp_path, monkeypatch):
    """Bytes per token: (kv_lora_rank + rope) per layer, against 2 x heads x
    (nope + rope) per layer for the per-head cache of VLLM_MLA_DISABLE=1."""
    save_random_deepseek("v2", tmp_path, tokenizer)
    mla = LLM(str(tmp_path), dtype="bfloat16")
    worker = mla.llm_engine.engine_core.worker
    layers = 3
    assert worker.block_bytes() == 32 * layers * (32 + 16) * 2
    cache = worker.model.attention_layers()[0].kv_cache
    assert len(cache) == 1 and cache[0].shape[1:] == (32, 48)
    del mla
    monkeypatch.setenv("VLLM_MLA_DISABLE", "1")
    per_head = LLM(str(tmp_path), dtype="bfloat16")
    assert per_head.llm_engine.engine_core.worker.block_bytes() == 32 * layers * 2 * 4 * 40 * 2


def test_bf16_tracks_fp32_transformers(tokenizer, tmp_path):
    hf_model = save_random_deepseek("v2", tmp_path, tokenizer, seed=2)
    llm = LLM(str(tmp_path), dtype="bfloat16")
    gap = prompt_logprob_gap(llm, hf_model, _prompt(30, len(tokenizer), 3))
    assert gap < 0.05, gap


@pytest.mark.parametrize("field,value,message", [
    ("kv_lora_rank", 40, r"kv_lora_rank \(40\) and qk_rope_head_dim \(16\) to be multiples of 16"),
    ("qk_rope_head_dim", 8, r"kv_lora_rank \(32\) and qk_rope_head_dim \(8\) to be multiples"),
    ("kv_lora_rank", 1024, r"cached latent .* = 1040\) is above the CPU kernel's 1024"),
])
def test_head_dims_the_kernels_cannot_take_fail_at_load(tokenizer, tmp_path, field, value,
                                                        message):
    save_random_deepseek("v2", tmp_path, tokenizer)
    config = json.loads((tmp_path / "config.json").read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        LLM(str(tmp_path), dtype="float32", load_format="dummy")


@pytest.mark.slow  # a fresh process on Triton's interpreter; CI's slow step runs it
def test_triton_mla_backend_matches_transformers(tokenizer, tmp_path):
    """VLLM_ATTENTION_BACKEND=TRITON_MLA: decode through the Triton MLA
    kernel (Triton's interpreter here), in a fresh process: the interpreter
    must be on before triton is first imported."""
    import subprocess
    import sys

    from tests.utils import clean_env
    pytest.importorskip("triton")
    hf_model = save_random_deepseek("v2_grouped", tmp_path, tokenizer, seed=6)
    prompt = _prompt(21, len(tokenizer), 8)
    code = (
        "import json\n"
        "from vllm import LLM, SamplingParams\n"
        f"llm = LLM({str(tmp_path)!r}, dtype='float32')\n"
        "name = llm.llm_engine.engine_core.worker.attn_backend.name\n"
        f"out = llm.generate({{'prompt_token_ids': {prompt}}}, SamplingParams(temperature=0, "
        "max_tokens=6, ignore_eos=True), use_tqdm=False)[0]\n"
        "print('RESULT', json.dumps([name, list(out.outputs[0].token_ids)]))\n")
    env = clean_env(TRITON_INTERPRET="1", VLLM_CPU_KVCACHE_SPACE="1",
                    VLLM_ATTENTION_BACKEND="TRITON_MLA")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    name, tokens = json.loads(next(line[len("RESULT "):] for line in out.stdout.splitlines()
                                   if line.startswith("RESULT ")))
    assert name == "TRITON_MLA" and len(tokens) == 6
    assert_greedy_agrees(hf_model, prompt, tokens, "v2_grouped")


def test_backends_that_cannot_run_the_layers_fail_at_load(tokenizer, tmp_path, monkeypatch):
    save_random_deepseek("v2", tmp_path, tokenizer)
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "TORCH_SDPA")
    with pytest.raises(ValueError, match="'TORCH_SDPA' does not run MLA layers"):
        LLM(str(tmp_path), dtype="float32", load_format="dummy")
    monkeypatch.setenv("VLLM_MLA_DISABLE", "1")  # a per-head cache: any backend
    LLM(str(tmp_path), dtype="float32", load_format="dummy")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "TRITON_MLA")
    with pytest.raises(ValueError, match="'TRITON_MLA' runs MLA layers only"):
        LLM(str(tmp_path), dtype="float32", load_format="dummy")


@pytest.mark.slow  # a server process; CI's slow step runs it
def test_served_completion_equals_offline(tokenizer, tmp_path):
    from tests.entrypoints.server import RemoteServer
    save_random_deepseek("v3", tmp_path, tokenizer, seed=7)
    prompt = _prompt(30, len(tokenizer), 9)
    offline = LLM(str(tmp_path), dtype="float32").generate(
        {"prompt_token_ids": prompt}, GREEDY, use_tqdm=False)[0].outputs[0].token_ids
    server = RemoteServer([str(tmp_path), "--dtype", "float32"])
    try:
        completion = server.client().completions.create(
            model=str(tmp_path), prompt=prompt, max_tokens=12, temperature=0,
            extra_body={"ignore_eos": True, "skip_special_tokens": False})
        assert completion.choices[0].text == tokenizer.decode(offline)
    finally:
        server.stop()
