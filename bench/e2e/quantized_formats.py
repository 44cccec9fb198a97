"""The embedded SmolLM2-135M-Instruct in each quantized format this engine
serves, side by side in one run: the shipped Q4_1 GGUF (the default), and
AWQ and GPTQ (4-bit, round-to-nearest, group 64) checkpoints written from
the same weights by the tests' packers (tests/engine/quant_checkpoints.py)
into a temporary folder. For each: its greedy answer to one chat prompt,
and batch-1 decode speed (128 tokens after a short prompt, best of 3).

    python bench/e2e/quantized_formats.py [--group-size 64] [--dtype auto]

Not part of the test suite; prefix VLLM_CPU_ISA=avx2 for the AVX2 kernels.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.engine.quant_checkpoints import quantize_llama  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.transformers_utils.gguf_file import load_gguf_tokenizer  # noqa: E402
from vllm.transformers_utils.model_resolver import default_model_path  # noqa: E402


def decode_speed(llm: LLM, tokens: int = 128, rounds: int = 3) -> float:
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    llm.generate(["Hello"], SamplingParams(max_tokens=8), use_tqdm=False)  # warm
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        llm.generate(["The history of the city of Paris"], params, use_tqdm=False)
        best = max(best, tokens / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM
    path = default_model_path()
    tokenizer = load_gguf_tokenizer(path)
    work = Path(tempfile.mkdtemp(prefix="quantized_formats_"))
    targets = {"gguf-q4_1": None}
    for method in ("awq", "gptq"):
        folder = work / method
        folder.mkdir()
        # each from the GGUF's weights (quantize_llama replaces them in place)
        quantize_llama(AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32),
            folder, tokenizer, method, group_size=args.group_size)
        targets[method] = str(folder)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    print("| format | batch-1 decode (tok/s) | answer |")
    print("|---|---|---|")
    for name, target in targets.items():
        llm = LLM(target, dtype=args.dtype, max_model_len=512) if target else \
            LLM(dtype=args.dtype, max_model_len=512)
        answer = llm.chat(chat, SamplingParams(temperature=0, max_tokens=16),
                          use_tqdm=False)[0].outputs[0].text
        print(f"| {name} | {decode_speed(llm):.0f} | {answer!r} |", flush=True)
        del llm


if __name__ == "__main__":
    main()
