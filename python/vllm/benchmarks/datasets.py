"""Benchmark requests: random token prompts of a fixed length, or a JSON
dataset file (a list of {"prompt": str, "output_len": int?} records, or
ShareGPT-style {"conversations": [{"value": ...}, ...]} records)."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass


@dataclass
class BenchRequest:
    prompt: str | list[int]
    prompt_len: int
    output_len: int


def random_requests(tokenizer, num: int, input_len: int, output_len: int,
                    seed: int = 0) -> list[BenchRequest]:
    """Prompts of exactly input_len random (non-special) token ids."""
    rng = random.Random(seed)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab = [t for t in range(min(len(tokenizer), 1 << 20)) if t not in special]
    out = []
    for _ in range(num):
        ids = [rng.choice(vocab) for _ in range(input_len)]
        out.append(BenchRequest(ids, input_len, output_len))
    return out


def dataset_requests(path: str, tokenizer, num: int, output_len: int | None,
                     seed: int = 0) -> list[BenchRequest]:
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty JSON list of records")
    rng = random.Random(seed)
    rng.shuffle(records)
    out = []
    for record in records:
        if "prompt" in record:
            prompt, completion = record["prompt"], record.get("completion")
            wanted = record.get("output_len")
        elif "conversations" in record and len(record["conversations"]) >= 2:
            prompt = record["conversations"][0]["value"]
            completion, wanted = record["conversations"][1]["value"], None
        else:
            continue
        prompt_len = len(tokenizer(prompt).input_ids)
        if wanted is None:
            wanted = (output_len if output_len is not None
                      else max(4, len(tokenizer(completion).input_ids)) if completion else 128)
        out.append(BenchRequest(prompt, prompt_len, int(wanted)))
        if len(out) == num:
            break
    if not out:
        raise ValueError(f"{path}: no usable records (need 'prompt' or 'conversations')")
    return out
