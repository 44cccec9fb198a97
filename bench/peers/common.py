"""What every peer runner shares: the workload file, the clock, the result
line. Imports nothing of vllm, so the same file runs under any peer's venv."""
from __future__ import annotations

import argparse
import json
import sys
import time

RESULT_PREFIX = "PEER_RESULT "


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workload", required=True, help="JSON written by bench/compare.py")
    parser.add_argument("--model", required=True, help="model folder or GGUF file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quantization", default=None,
                        help="passed to LLM(quantization=...) where given (ours: 'none' "
                             "loads the GGUF dequantized to bf16)")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="measures to leave out (throughput, batch1, prefill)")
    return parser.parse_args()


def load_workload(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


class Clock:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def report(result: dict) -> None:
    """One line the orchestrator parses; everything else on stdout is noise."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    sys.stdout.flush()
