"""The workload through Hugging Face transformers' generate (bf16, eager):
batched throughput with left padding, batch-1 decode, prefill forward."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Clock, load_workload, parse_args, report  # noqa: E402

HF_BATCH = 32  # TOOLCHAIN's measured best batch for transformers here


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    work = load_workload(args.workload)
    import torch
    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM

    result = {"version": transformers.__version__, "torch": torch.__version__}
    with Clock() as clock:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).eval()
    result["startup_s"] = clock.seconds
    pad = 0

    def generate(batch: list[list[int]], new_tokens: int) -> int:
        width = max(len(ids) for ids in batch)
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch])
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)
        return (out.shape[1] - width) * len(batch)

    generate(work["throughput"]["prompts"][:2], 4)  # warm-up
    if "throughput" not in args.skip:
        tp = work["throughput"]
        made = 0
        with Clock() as clock:
            for i in range(0, len(tp["prompts"]), HF_BATCH):
                made += generate(tp["prompts"][i:i + HF_BATCH], tp["output_len"])
        result["throughput_out_tok_s"] = made / clock.seconds
        result["throughput_batch"] = HF_BATCH
    if "batch1" not in args.skip:
        b1 = work["batch1"]
        with Clock() as clock:
            made = generate([b1["prompt"]], b1["tokens"])
        result["batch1_tok_s"] = made / clock.seconds
    if "prefill" not in args.skip:
        with torch.inference_mode():
            model(torch.tensor([work["prefill"]["warmup"]]), logits_to_keep=1)
        total, seconds = 0, 0.0
        for ids in work["prefill"]["prompts"]:
            with torch.inference_mode(), Clock() as clock:
                model(torch.tensor([ids]), logits_to_keep=1)
            total, seconds = total + len(ids), seconds + clock.seconds
        result["prefill_tok_s"] = total / seconds
    report(result)


if __name__ == "__main__":
    main()
