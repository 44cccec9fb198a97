"""The workload through llama.cpp (llama-cpp-python) on a GGUF file: batch-1
decode, prefill, and throughput as its Python API serves it: one request
after another (it has no batched multi-sequence generate)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Clock, load_workload, parse_args, report  # noqa: E402

SEQUENTIAL_PROMPTS = 8  # requests timed for the one-after-another throughput


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    work = load_workload(args.workload)
    import llama_cpp

    result = {"version": llama_cpp.__version__}
    with Clock() as clock:
        llm = llama_cpp.Llama(model_path=args.model, n_ctx=1024, n_batch=512,
                              n_threads=args.threads, n_threads_batch=args.threads,
                              verbose=False)
    result["startup_s"] = clock.seconds

    def decode(prompt: list[int], new_tokens: int) -> int:
        llm.reset()
        made = 0
        for _ in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            made += 1  # the generator does not stop at EOS: exactly new_tokens
            if made == new_tokens:
                break
        return made

    decode(work["throughput"]["prompts"][0], 4)  # warm-up
    if "throughput" not in args.skip:
        tp = work["throughput"]
        made = 0
        with Clock() as clock:
            for ids in tp["prompts"][:SEQUENTIAL_PROMPTS]:
                made += decode(ids, tp["output_len"])
        result["throughput_out_tok_s"] = made / clock.seconds
        result["throughput_batch"] = 1
    if "batch1" not in args.skip:
        b1 = work["batch1"]
        with Clock() as clock:
            made = decode(b1["prompt"], b1["tokens"])
        result["batch1_tok_s"] = made / clock.seconds
    if "prefill" not in args.skip:
        llm.reset()
        llm.eval(work["prefill"]["warmup"])
        total, seconds = 0, 0.0
        for ids in work["prefill"]["prompts"]:
            llm.reset()
            with Clock() as clock:
                llm.eval(ids)
            total, seconds = total + len(ids), seconds + clock.seconds
        result["prefill_tok_s"] = total / seconds
    report(result)


if __name__ == "__main__":
    main()
