"""Offline throughput of LLM.generate on synthetic prompts (random token ids)
of a fixed input length, greedy, ignoring EOS so every request makes exactly
--output-len tokens. Prints requests/s, total and output tokens/s, and the
batch-1 decode rate, from one engine. (`vllm bench throughput` and `vllm
bench latency --batch-size 1` measure the same with vLLM's CLI, sampling at
temperature 1 and starting an engine each.)

    python bench/e2e/offline_throughput.py --num-prompts 64 --input-len 158 --output-len 128

--quantization none serves the default GGUF dequantized to --dtype (the
dense path); --limits also measures the machine's fp32 FMA peak (for the
active kernel variant's vector width) and read bandwidth in the same run,
and reports the offline run's GFLOP/s and the batch-1 run's GB/s as
fractions of them (bench/e2e/model_costs.py counts the work).
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
    parser.add_argument("--quantization", default=None,
                        help="as LLM(quantization=...); 'none' for dense weights")
    parser.add_argument("--limits", action="store_true",
                        help="measure FMA peak and read bandwidth, report fractions")
    parser.add_argument("--output-json", default=None)
    args = parser.parse_args()

    import torch

    from vllm import LLM, SamplingParams
    from vllm.benchmarks.datasets import random_requests

    start = time.perf_counter()
    llm = LLM(model=args.model, dtype=args.dtype, quantization=args.quantization,
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
    if args.limits:
        result.update(against_limits(llm, args, result))
    print(json.dumps(result, indent=2))
    if args.output_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
        with open(args.output_json, "w") as f:
            json.dump(result, f, indent=2)


def against_limits(llm, args, result: dict) -> dict:
    """The runs' achieved GFLOP/s and GB/s against the machine's limits,
    measured in this process with the active kernel variant's vector width.
    This VM's read bandwidth swings (30-60 GB/s within minutes), so batch-1
    runs three more times, each between two bandwidth measurements, and
    each run is set against the mean of its two."""
    import statistics
    import sys

    import torch

    from vllm import SamplingParams
    from vllm import _custom_ops as ops
    from model_costs import decode_bytes, offline_flops
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(os.path.dirname(here), "kernels"))
    from bandwidth import read_gbps
    from fma_peak import fma_peak_gflops

    cfg = llm.llm_engine.model_config.hf_config
    isa = ops.cpu_isa()
    fma_isa = "avx512" if isa.startswith("avx512") else "avx2"
    peak = fma_peak_gflops(fma_isa, torch.get_num_threads())
    out = {"kernel_variant": isa, "fp32_fma_peak_GFLOPs": peak}
    gflops = offline_flops(cfg, args.num_prompts, args.input_len, args.output_len) / 1e9
    out["offline_GFLOPs"] = round(gflops / result["elapsed_s"], 1)
    out["offline_fraction_of_fma_peak"] = round(out["offline_GFLOPs"] / peak, 3)
    if args.batch1_tokens:
        weight_bytes = 4.0 if args.dtype == "float32" else 2.0
        mid = 16 + args.batch1_tokens // 2  # the mean position of a batch-1 run
        gb = decode_bytes(cfg, mid, weight_bytes, weight_bytes) / 1e9
        one = SamplingParams(temperature=0.0, max_tokens=args.batch1_tokens, ignore_eos=True)
        prompt = {"prompt_token_ids": list(range(100, 116))}
        runs = []
        for _ in range(3):
            before = read_gbps(repeat=3)
            t0 = time.perf_counter()
            llm.generate(prompt, one, use_tqdm=False)
            achieved = gb * args.batch1_tokens / (time.perf_counter() - t0)
            read = (before + read_gbps(repeat=3)) / 2
            runs.append((round(achieved, 1), round(read, 1), round(achieved / read, 3)))
        out["batch1_runs_GBps_read_fraction"] = runs
        out["batch1_fraction_of_read"] = statistics.median(r[2] for r in runs)
    quantized = llm.llm_engine.model_config.quantization
    if quantized:
        out["note"] = (f"weights quantized ({quantized}): the FLOPs are the dense model's, "
                       "the bytes assume 16-bit weights")
    return out


if __name__ == "__main__":
    main()
