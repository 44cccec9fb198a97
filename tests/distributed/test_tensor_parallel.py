"""Tensor parallelism (tensor_parallel_size=2: rank 0 in the engine core,
rank 1 a worker process) against one rank, on tiny random Llama-family
checkpoints written by transformers: greedy fp32 tokens equal, prompt
logprobs within 1e-4, seeded sampling equal; KV heads split or replicated;
models and settings it cannot run refused at load with a clear line; the
server with --tensor-parallel-size 2. Each engine runs in a fresh process
(rank 0 joins a process group and binds its threads)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.utils import clean_env

COMMON = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=512)


@pytest.fixture(scope="module")
def tokenizer():
    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    return load_gguf_tokenizer(default_model_path())


def _save(folder, tokenizer, config_name: str, model_name: str, **kwargs) -> None:
    import transformers
    config = getattr(transformers, config_name)(vocab_size=len(tokenizer), **{**COMMON, **kwargs})
    config.pad_token_id = None
    config.bos_token_id = config.eos_token_id = None
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config).to(torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(std=0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


_RUN = """
import json, sys
from vllm import LLM, SamplingParams
folder, tp = sys.argv[1], int(sys.argv[2])
llm = LLM(folder, dtype="float32", tensor_parallel_size=tp)
prompts = [{"prompt_token_ids": list(range(5 + k, 5 + k + n))} for k, n in ((0, 7), (3, 21))]
greedy = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True,
                                              prompt_logprobs=1), use_tqdm=False)
seeded = llm.generate(prompts, SamplingParams(temperature=1.0, seed=7, max_tokens=10,
                                              ignore_eos=True), use_tqdm=False)
print("RESULT", json.dumps({
    "greedy": [o.outputs[0].token_ids for o in greedy],
    "seeded": [o.outputs[0].token_ids for o in seeded],
    "prompt_logprobs": [[None if lp is None else lp[p].logprob
                         for lp, p in zip(o.prompt_logprobs, pr["prompt_token_ids"])]
                        for o, pr in zip(greedy, prompts)],
    "ranks": llm.llm_engine.engine_core.worker.model.model.layers[0].self_attn.num_heads}))
"""


def _run(folder, tp: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _RUN, str(folder), str(tp)], capture_output=True,
                         text=True, timeout=300, env=clean_env(VLLM_CPU_KVCACHE_SPACE="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(line[len("RESULT "):] for line in out.stdout.splitlines()
                           if line.startswith("RESULT ")))


# fresh engines in subprocesses take ~10 s a case: the variants beyond the
# first run in CI's slow step
@pytest.mark.parametrize("arch,kwargs", [
    ("llama", dict(num_key_value_heads=2)),  # KV heads split: one per rank
    pytest.param("llama", dict(num_key_value_heads=1),  # fewer KV heads than ranks
                 marks=pytest.mark.slow),
    pytest.param("qwen2", dict(num_key_value_heads=2),  # q/k/v biases, o without
                 marks=pytest.mark.slow),
], ids=["kv-split", "kv-replicated", "qwen2-biases"])
def test_two_ranks_match_one(tmp_path, tokenizer, arch, kwargs):
    names = {"llama": ("LlamaConfig", "LlamaForCausalLM"),
             "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}[arch]
    _save(tmp_path, tokenizer, *names, **kwargs)
    one, two = _run(tmp_path, 1), _run(tmp_path, 2)
    assert (one["ranks"], two["ranks"]) == (4, 2)  # query heads per rank
    assert two["greedy"] == one["greedy"]
    assert two["seeded"] == one["seeded"]
    for a, b in zip(one["prompt_logprobs"], two["prompt_logprobs"]):
        assert [x is None for x in a] == [x is None for x in b]
        assert max(abs(x - y) for x, y in zip(a, b) if x is not None) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("edit,message", [
    (dict(num_attention_heads=3, hidden_size=96),
     r"the number of attention heads \(3\) is not divisible by tensor_parallel_size 2"),
    (dict(intermediate_size=255), r"intermediate size \(255\) is not divisible"),
])
def test_shapes_that_do_not_split_are_refused(tmp_path, tokenizer, edit, message):
    _save(tmp_path, tokenizer, "LlamaConfig", "LlamaForCausalLM",
          **{"num_key_value_heads": 1, **edit})
    code = ("from vllm import LLM\n"
            f"LLM({str(tmp_path)!r}, dtype='float32', tensor_parallel_size=2)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=clean_env(VLLM_CPU_KVCACHE_SPACE="1"))
    assert out.returncode != 0
    assert "ValueError" in out.stderr and __import__("re").search(message, out.stderr), \
        out.stderr[-2000:]


@pytest.mark.slow
def test_models_tensor_parallelism_cannot_run_are_refused(tmp_path, tokenizer):
    from tests.engine.moe_checkpoints import save_random_moe
    save_random_moe("qwen2_moe", tmp_path, tokenizer)
    code = ("from vllm import LLM\n"
            f"LLM({str(tmp_path)!r}, dtype='float32', tensor_parallel_size=2)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=clean_env(VLLM_CPU_KVCACHE_SPACE="1"))
    assert out.returncode != 0
    assert "tensor parallelism runs dense Llama-family models" in out.stderr, out.stderr[-2000:]


@pytest.mark.slow  # a server and a worker process; CI's slow step runs it
def test_served_with_two_ranks_equals_offline(tmp_path, tokenizer):
    from tests.entrypoints.server import RemoteServer
    _save(tmp_path, tokenizer, "LlamaConfig", "LlamaForCausalLM", num_key_value_heads=2)
    offline = _run(tmp_path, 1)["greedy"][0]
    server = RemoteServer([str(tmp_path), "--dtype", "float32", "--tensor-parallel-size", "2"])
    try:
        completion = server.client().completions.create(
            model=str(tmp_path), prompt=list(range(5, 12)), max_tokens=10, temperature=0,
            extra_body={"ignore_eos": True, "skip_special_tokens": False})
        assert completion.choices[0].text == tokenizer.decode(offline)
    finally:
        server.stop()


def test_a_dead_worker_fails_the_next_step_at_once(tmp_path, tokenizer):
    _save(tmp_path, tokenizer, "LlamaConfig", "LlamaForCausalLM", num_key_value_heads=2)
    code = f"""
import os, signal, time
from vllm import LLM, SamplingParams
llm = LLM({str(tmp_path)!r}, dtype="float32", tensor_parallel_size=2)
params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
llm.generate({{"prompt_token_ids": [1, 2, 3]}}, params, use_tqdm=False)
worker = llm.llm_engine.engine_core.worker.processes[0]
os.kill(worker.pid, signal.SIGKILL)
worker.join()
start = time.monotonic()
try:
    llm.generate({{"prompt_token_ids": [1, 2, 3]}}, params, use_tqdm=False)
except RuntimeError as exc:
    print("FAILED_IN", time.monotonic() - start, exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=clean_env(VLLM_CPU_KVCACHE_SPACE="1"))
    line = next((line for line in out.stdout.splitlines() if line.startswith("FAILED_IN")), None)
    assert line is not None, out.stderr[-3000:]
    assert float(line.split()[1]) < 5
    assert "tensor-parallel worker rank 1 (exit code -9) died" in line
