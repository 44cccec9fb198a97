"""Offline throughput of LLM.generate on synthetic prompts (random token ids)
of a fixed input length, greedy, ignoring EOS so every request makes exactly
--output-len tokens. Prints requests/s, total and output tokens/s, and the
batch-1 decode rate, from one engine. (`vllm bench throughput` and `vllm
bench latency --batch-size 1` measure the same with vLLM's CLI, sampling at
temperature 1 and starting an engine each.)

    python bench/e2e/offline_throughput.py --num-prompts 64 --input-len 158 --output-len 128
"""
from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=158)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--batch1-tokens", type=int, default=128,
                        help="tokens for the batch-1 decode measurement (0: skip)")
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args()

    import torch

    from vllm import LLM, SamplingParams
    from vllm.benchmarks.datasets import random_requests

    start = time.perf_counter()
    llm = LLM(model=args.model, dtype=args.dtype,
              max_model_len=max(512, args.input_len + args.output_len + 1))
    startup = time.perf_counter() - start
    requests = random_requests(llm.get_tokenizer(), args.num_prompts, args.input_len,
                               args.output_len)
    prompts = [{"prompt_token_ids": r.prompt} for r in requests]
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    llm.reset_prefix_cache()

    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    out_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    in_tokens = sum(len(o.prompt_token_ids) for o in outputs)
    result = {
        "num_prompts": args.num_prompts, "input_len": args.input_len,
        "output_len": args.output_len, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "startup_s": round(startup, 2), "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(args.num_prompts / elapsed, 3),
        "total_tokens_per_s": round((in_tokens + out_tokens) / elapsed, 1),
        "output_tokens_per_s": round(out_tokens / elapsed, 1),
    }
    if args.batch1_tokens:
        one = SamplingParams(temperature=0.0, max_tokens=args.batch1_tokens, ignore_eos=True)
        t0 = time.perf_counter()
        llm.generate({"prompt_token_ids": prompts[0]["prompt_token_ids"][:16]}, one,
                     use_tqdm=False)
        result["batch1_decode_tokens_per_s"] = round(args.batch1_tokens
                                                     / (time.perf_counter() - t0), 1)
    print(json.dumps(result, indent=2))
    if args.output_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
        with open(args.output_json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
