"""Turn a pytest-benchmark JSON of an `impl`-parametrised benchmark into a
markdown table of medians and torch-native / vllm ratios.

    python bench/kernels/ratio_table.py results.json
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    data = json.load(open(path))
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        case = bench["name"].split("[", 1)[1].rstrip("]")
        key, impl = case.rsplit("-", 1)
        rows[key][impl] = bench["stats"]["median"] * 1e6
    print("| case | torch-native (µs) | vllm (µs) | torch / vllm |")
    print("|---|---|---|---|")
    for key in sorted(rows):
        r = rows[key]
        if "torch" in r and "vllm" in r:
            print(f"| {key} | {r['torch']:.1f} | {r['vllm']:.1f} | {r['torch'] / r['vllm']:.1f}x |")


if __name__ == "__main__":
    main(sys.argv[1])
