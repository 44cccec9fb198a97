"""Tensor and pipeline parallelism on this machine: TP=2 and PP=2 (one core
per rank) against one rank on all cores, same model, same workload, each in
a fresh process, in alternation (rounds), with the time rank 0 spends in
communication and, with pipeline stages, waiting for the last stage.

    python bench/e2e/model_parallel.py [--rounds 2] [--configs tp1,tp2,pp2]

Model: a TinyLlama-1.1B-shaped Llama (hidden 2048, 32 query / 4 KV heads of
64, MLP 5632) cut to 4 layers, random bf16 weights written by transformers
into bench/.models/tinyllama-4l-bf16 (SmolLM2's 9 heads do not split in
two). Workload: 64 prompts x 158 tokens -> 128 tokens greedy (EOS ignored),
and batch-1 decode of 128 tokens after a 16-token prompt. Communication:
rank 0's wall time inside the groups' all_reduce / all_gather /
broadcast_object / isend calls (timers around GroupCoordinator's methods),
per decode step of the batch-1 run. Waiting: rank 0's time in
the executor's wait (the last stage's result not back yet), per step of
the 64 x 128 run, and the steps that run: with two stages in flight each
stage idles only where the micro-batches differ in size.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", ".models", "tinyllama-4l-bf16")

_RUN = r"""
import json, sys, time
import torch
from vllm.distributed import parallel_state
spent = {"s": 0.0, "calls": 0}
for name in ("all_reduce", "all_gather", "broadcast_object", "isend"):
    original = getattr(parallel_state.GroupCoordinator, name)
    def timed(self, *a, _original=original, **k):
        t = time.perf_counter()
        try:
            return _original(self, *a, **k)
        finally:
            spent["s"] += time.perf_counter() - t
            spent["calls"] += 1
    setattr(parallel_state.GroupCoordinator, name, timed)
from vllm.executor import executor_base
waited = {"s": 0.0, "calls": 0}
original_wait = executor_base.DistributedExecutorBase.wait
def timed_wait(self, future):
    t = time.perf_counter()
    try:
        return original_wait(self, future)
    finally:
        waited["s"] += time.perf_counter() - t
        waited["calls"] += 1
executor_base.DistributedExecutorBase.wait = timed_wait
from vllm import LLM, SamplingParams
model, tp, pp, backend = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = LLM(model, dtype="bfloat16", tensor_parallel_size=tp, pipeline_parallel_size=pp,
          max_model_len=512, distributed_executor_backend=backend if tp * pp > 1 else None)
g = torch.Generator().manual_seed(0)
prompts = [{"prompt_token_ids": torch.randint(100, 30000, (158,), generator=g).tolist()}
           for _ in range(64)]
llm.generate(prompts[:2], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
llm.reset_prefix_cache()
waited.update(s=0.0, calls=0)
t = time.perf_counter()
outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=128, ignore_eos=True),
                    use_tqdm=False)
throughput = sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - t)
steps = max(waited["calls"], 1)
wait_ms = waited["s"] * 1e3 / steps
spent.update(s=0.0, calls=0)
t = time.perf_counter()
llm.generate({"prompt_token_ids": prompts[0]["prompt_token_ids"][:16]},
             SamplingParams(temperature=0, max_tokens=128, ignore_eos=True), use_tqdm=False)
batch1 = 128 / (time.perf_counter() - t)
print("RESULT", json.dumps({"tp": tp, "pp": pp, "out_tok_s": round(throughput, 1),
                            "wait_ms_per_step_64x128": round(wait_ms, 2),
                            "steps_64x128": waited["calls"],
                            "batch1_tok_s": round(batch1, 1),
                            "comm_ms_per_decode_step": round(spent["s"] * 1e3 / 128, 3),
                            "comm_calls_per_step": round(spent["calls"] / 128, 1)}))
"""


def make_model() -> None:
    if os.path.isfile(os.path.join(MODEL, "config.json")):
        return
    sys.path.insert(0, os.path.join(HERE, "..", "peers"))
    from prepare_models import save_random_bf16
    from transformers import LlamaConfig, LlamaForCausalLM

    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    tokenizer = load_gguf_tokenizer(default_model_path())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=5632,
                         num_hidden_layers=4, num_attention_heads=32, num_key_value_heads=4,
                         max_position_embeddings=2048, tie_word_embeddings=False)
    save_random_bf16(LlamaForCausalLM, config, tokenizer, MODEL)


def run(tp: int, pp: int, partition: str | None = None, backend: str = "mp") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    env.update(OMP_NUM_THREADS="2", VLLM_CPU_KVCACHE_SPACE="2")
    if partition:
        env["VLLM_PP_LAYER_PARTITION"] = partition
    out = subprocess.run([sys.executable, "-c", _RUN, MODEL, str(tp), str(pp), backend],
                         capture_output=True,
                         text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(next(line[len("RESULT "):] for line in out.stdout.splitlines()
                           if line.startswith("RESULT ")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--configs", default="tp1,tp2,pp2",
                        help="comma-separated: tp<N> (tensor), pp<N> (pipeline), "
                             "tp<N>pp<M> (both); a pipeline config may end in "
                             "@<VLLM_PP_LAYER_PARTITION> with '-' between counts, e.g. "
                             "pp2@3-1; a '+ray' suffix runs its ranks on Ray actors "
                             "(distributed_executor_backend='ray'), e.g. tp2+ray")
    args = parser.parse_args()
    make_model()
    configs = []
    for name in args.configs.split(","):
        name, ray_suffix, _ = name.partition("+ray")
        name, _, partition = name.partition("@")
        tp = int(name.split("tp")[1].split("pp")[0]) if "tp" in name else 1
        pp = int(name.split("pp")[1]) if "pp" in name else 1
        configs.append((tp, pp, partition.replace("-", ",") or None,
                        "ray" if ray_suffix else "mp"))
    for round_ in range(args.rounds):
        for tp, pp, partition, backend in configs:
            result = run(tp, pp, partition, backend)
            if partition:
                result["partition"] = partition
            if backend == "ray":
                result["backend"] = "ray"
            print(f"round {round_ + 1}", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
