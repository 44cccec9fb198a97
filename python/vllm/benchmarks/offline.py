"""`vllm bench throughput` and `vllm bench latency`: offline, in process."""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=128)
    parser.add_argument("--max-num-batched-tokens", type=int, default=None)
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--quantization", "-q", default=None,
                        help="as vllm serve's (a .gguf file: gguf unless 'none')")
    parser.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction,
                        default=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-json", default=None)


def _llm(args, min_len: int):
    from vllm import LLM
    max_len = args.max_model_len or max(min_len + 1, 512)
    return LLM(model=args.model, dtype=args.dtype, max_model_len=max_len,
               max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
               load_format=args.load_format, enable_prefix_caching=args.enable_prefix_caching,
               quantization=args.quantization, seed=args.seed)


def _write(args, result: dict) -> None:
    print(json.dumps(result, indent=2))
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(result, f, indent=2)


def add_throughput_args(parser: argparse.ArgumentParser) -> None:
    add_engine_args(parser)
    parser.add_argument("--dataset", default=None, help="JSON dataset file (else random)")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=158)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                        help="make every request produce exactly its output length")


def run_throughput(args) -> dict:
    from vllm import SamplingParams
    from vllm.benchmarks.datasets import dataset_requests, random_requests
    start = time.perf_counter()
    llm = _llm(args, args.input_len + args.output_len)
    startup = time.perf_counter() - start
    tokenizer = llm.get_tokenizer()
    if args.dataset:
        requests = dataset_requests(args.dataset, tokenizer, args.num_prompts, args.output_len,
                                    args.seed)
    else:
        requests = random_requests(tokenizer, args.num_prompts, args.input_len,
                                   args.output_len, args.seed)
    prompts = [{"prompt_token_ids": r.prompt} if isinstance(r.prompt, list) else r.prompt
               for r in requests]
    params = [SamplingParams(temperature=1.0, top_p=1.0, max_tokens=r.output_len,
                             ignore_eos=args.ignore_eos) for r in requests]
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    prompt_tokens = sum(len(o.prompt_token_ids) for o in outputs)
    output_tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    result = {"num_requests": len(outputs), "elapsed_time": elapsed,
              "requests_per_second": len(outputs) / elapsed,
              "total_tokens_per_second": (prompt_tokens + output_tokens) / elapsed,
              "output_tokens_per_second": output_tokens / elapsed,
              "total_num_tokens": prompt_tokens + output_tokens,
              "total_output_tokens": output_tokens, "startup_seconds": startup}
    print(f"Throughput: {result['requests_per_second']:.2f} requests/s, "
          f"{result['total_tokens_per_second']:.2f} total tokens/s, "
          f"{result['output_tokens_per_second']:.2f} output tokens/s")
    _write(args, result)
    return result


def add_latency_args(parser: argparse.ArgumentParser) -> None:
    add_engine_args(parser)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--input-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--num-iters-warmup", type=int, default=1)
    parser.add_argument("--num-iters", type=int, default=5)


def run_latency(args) -> dict:
    from vllm import SamplingParams
    from vllm.benchmarks.datasets import random_requests
    llm = _llm(args, args.input_len + args.output_len)
    requests = random_requests(llm.get_tokenizer(), args.batch_size, args.input_len,
                               args.output_len, args.seed)
    prompts = [{"prompt_token_ids": r.prompt} for r in requests]
    params = SamplingParams(temperature=1.0, max_tokens=args.output_len, ignore_eos=True)
    for _ in range(args.num_iters_warmup):
        llm.generate(prompts, params, use_tqdm=False)
    latencies = []
    for _ in range(args.num_iters):
        llm.reset_prefix_cache()  # each iteration prefills from scratch
        start = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        latencies.append(time.perf_counter() - start)
    values = np.array(latencies)
    result = {"avg_latency": float(values.mean()), "latencies": latencies,
              "percentiles": {str(p): float(np.percentile(values, p))
                              for p in (10, 25, 50, 75, 90, 99)},
              "batch_size": args.batch_size, "input_len": args.input_len,
              "output_len": args.output_len,
              "output_tokens_per_second": args.batch_size * args.output_len / values.mean()}
    print(f"Avg latency: {result['avg_latency']:.4f} seconds")
    _write(args, result)
    return result
