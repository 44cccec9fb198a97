"""The engine on a GPU against transformers on the same GPU, in one run:
offline throughput (64 prompts x 158 -> 128 tokens, greedy) and batch-1
decode, for dense Llama models with dummy (random) weights in the shapes
of SmolLM2-135M and of a ~1B Llama; batch-1 set against the GPU's
measured device-to-device copy bandwidth (the HBM roofline).

    python bench/e2e/gpu_engine.py [--out results.json] [--models smollm2-135m llama-1b]
    python bench/e2e/gpu_engine.py --device cpu --models smollm2-135m --num-prompts 4 \
        --output-len 8 --batch1-tokens 8     # a smoke run of this script on the CPU

Needs only torch and transformers besides this package (the checkpoints
are made here: config + a word-level tokenizer; weights random in both
engines), so it runs on a lent machine without the embedded model."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

SHAPES = {
    # SmolLM2-135M-Instruct's dimensions
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         tie_word_embeddings=True),
    # Llama-3.2-1B's dimensions
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                     tie_word_embeddings=True),
}


def make_checkpoint(name: str, folder: str):
    import transformers

    from tests.engine.gpu_checkpoints import save_word_tokenizer
    save_word_tokenizer(folder)
    config = transformers.LlamaConfig(max_position_embeddings=2048, rope_theta=10000.0,
                                      bos_token_id=1, eos_token_id=2, **SHAPES[name])
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(folder)
    return config


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def copy_gbps(device: str) -> float:
    """Device-to-device copy of 2 GiB (256 MiB on the CPU): bytes read +
    written per second."""
    x = torch.empty(1 << (29 if device == "cuda" else 26), dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        start = time.perf_counter()
        y.copy_(x)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * x.numel() * 4 / best / 1e9


def run_ours(folder: str, prompts, output_len: int, batch1_tokens: int, enforce_eager: bool,
             device: str) -> dict:
    from vllm import LLM, SamplingParams
    start = time.perf_counter()
    llm = LLM(folder, device=device, dtype="bfloat16", load_format="dummy", max_model_len=512,
              gpu_memory_utilization=0.5, enforce_eager=enforce_eager)
    startup = time.perf_counter() - start
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True,
                            detokenize=False)
    batch = [{"prompt_token_ids": p} for p in prompts]
    llm.generate(batch[:2], params, use_tqdm=False)
    synchronize(device)
    start = time.perf_counter()
    outs = llm.generate(batch, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    one = SamplingParams(temperature=0.0, max_tokens=batch1_tokens, ignore_eos=True,
                         detokenize=False)
    start = time.perf_counter()
    llm.generate(batch[0], one, use_tqdm=False)
    batch1 = batch1_tokens / (time.perf_counter() - start)
    result = {"startup_s": round(startup, 1),
              "offline_out_tok_s": round(sum(len(o.outputs[0].token_ids) for o in outs)
                                         / elapsed, 1),
              "batch1_tok_s": round(batch1, 1)}
    del llm
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def run_transformers(config, prompts, output_len: int, batch1_tokens: int, device: str) -> dict:
    import transformers
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).to(device).eval()
    model.generation_config.pad_token_id = 0
    # one padded batch as transformers users run it (left padding)
    longest = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p):] = torch.tensor(p)
        mask[i, longest - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    kwargs = dict(do_sample=False, eos_token_id=None)
    with torch.no_grad():
        model.generate(ids[:2], attention_mask=mask[:2], max_new_tokens=8, **kwargs)
        synchronize(device)
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=mask, max_new_tokens=output_len,
                             min_new_tokens=output_len, **kwargs)
        synchronize(device)
        elapsed = time.perf_counter() - start
        one = torch.tensor([prompts[0]], device=device)
        start = time.perf_counter()
        model.generate(one, max_new_tokens=batch1_tokens, min_new_tokens=batch1_tokens, **kwargs)
        synchronize(device)
        batch1 = batch1_tokens / (time.perf_counter() - start)
    result = {"offline_out_tok_s": round((out.shape[1] - longest) * len(prompts) / elapsed, 1),
              "batch1_tok_s": round(batch1, 1)}
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--batch1-tokens", type=int, default=256)
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: a smoke run of this script (no CUDA graphs there)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from model_costs import decode_bytes
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 400, (158,), generator=generator).tolist()
               for _ in range(args.num_prompts)]
    bandwidth = copy_gbps(args.device)
    results = {"device": (torch.cuda.get_device_name() if args.device == "cuda" else "cpu"),
               "torch": torch.__version__, "copy_GBps": round(bandwidth, 1), "models": {}}
    for name in args.models:
        with tempfile.TemporaryDirectory() as folder:
            config = make_checkpoint(name, folder)
            common = (folder, prompts, args.output_len, args.batch1_tokens)
            row = {"ours_graphs": run_ours(*common, False, args.device),
                   "ours_eager": run_ours(*common, True, args.device),
                   "transformers": run_transformers(config, prompts, args.output_len,
                                                    args.batch1_tokens, args.device)}
        step_gb = decode_bytes(config, 16 + args.batch1_tokens // 2) / 1e9
        for key in ("ours_graphs", "ours_eager", "transformers"):
            achieved = row[key]["batch1_tok_s"] * step_gb
            row[key]["batch1_GBps"] = round(achieved, 1)
            row[key]["batch1_of_copy_bandwidth"] = round(achieved / bandwidth, 3)
        results["models"][name] = row
        print(name, json.dumps(row), flush=True)
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
