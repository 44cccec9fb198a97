"""Shared by the tensor- and pipeline-parallel tests: tiny random-init
checkpoints written by transformers, and one engine run per fresh process
(rank 0 joins a process group and binds its threads) reporting greedy
tokens, seeded samples and prompt logprobs."""
from __future__ import annotations

import json
import subprocess
import sys

import torch

from tests.utils import clean_env

COMMON = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=512)


def default_tokenizer():
    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    return load_gguf_tokenizer(default_model_path())


def save_random(folder, tokenizer, config_name: str, model_name: str, **kwargs) -> None:
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
folder, tp, pp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
backend, dtype, tokenizer = sys.argv[4], sys.argv[5], sys.argv[6] or None
llm = LLM(folder, tokenizer=tokenizer, dtype=dtype, tensor_parallel_size=tp,
          pipeline_parallel_size=pp,
          distributed_executor_backend=None if backend == "default" else backend)
lengths = ((0, 7), (3, 21), (9, 4), (2, 13))
prompts = [{"prompt_token_ids": list(range(5 + k, 5 + k + n))} for k, n in lengths]
greedy = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True,
                                              prompt_logprobs=1), use_tqdm=False)
seeded = llm.generate(prompts, [SamplingParams(temperature=1.0, seed=7 + i, max_tokens=10,
                                               ignore_eos=True) for i in range(len(prompts))],
                      use_tqdm=False)
worker = llm.llm_engine.engine_core.worker
model = worker.model.model if getattr(worker, "worker", worker) is not None else None
print("RESULT", json.dumps({
    "greedy": [o.outputs[0].token_ids for o in greedy],
    "seeded": [o.outputs[0].token_ids for o in seeded],
    "prompt_logprobs": [[None if lp is None else lp[p].logprob
                         for lp, p in zip(o.prompt_logprobs, pr["prompt_token_ids"])]
                        for o, pr in zip(greedy, prompts)],
    "heads": model and model.local_layers[0].self_attn.num_heads,
    "layers": model and [model.start_layer, model.end_layer]}))
"""


def run_engine(folder, tp: int = 1, pp: int = 1, backend: str | None = None,
               dtype: str = "float32", tokenizer: str | None = None, **env: str) -> dict:
    """`backend`: distributed_executor_backend (None: the default). With
    every rank a Ray actor (VLLM_USE_RAY_SPMD_WORKER=1) the engine core
    holds no model: "heads" and "layers" are None. `tokenizer`: for a GGUF
    file that carries none."""
    out = subprocess.run([sys.executable, "-c", _RUN, str(folder), str(tp), str(pp),
                          backend or "default", dtype, tokenizer or ""],
                         capture_output=True, text=True, timeout=300,
                         env=clean_env(VLLM_CPU_KVCACHE_SPACE="1", **env))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(line[len("RESULT "):] for line in out.stdout.splitlines()
                           if line.startswith("RESULT ")))


def assert_same_generation(one: dict, other: dict, logprob_tolerance: float = 1e-4) -> None:
    """Greedy and seeded tokens equal; prompt logprobs within the tolerance."""
    assert other["greedy"] == one["greedy"]
    assert other["seeded"] == one["seeded"]
    for a, b in zip(one["prompt_logprobs"], other["prompt_logprobs"]):
        assert [x is None for x in a] == [x is None for x in b]
        assert max(abs(x - y) for x, y in zip(a, b) if x is not None) < logprob_tolerance
