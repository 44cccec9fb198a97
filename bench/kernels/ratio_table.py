"""Turn a pytest-benchmark JSON of `impl`-parametrised benchmarks into a
markdown table: median per implementation, and torch-native / fastest-vllm.

    python bench/kernels/ratio_table.py results.json [name-filter]

Cases are `<test>[<threads>-<params>-<impl>]`; implementations whose name
starts with "vllm" are ours, "torch" is the composition they replace. GB/s
is shown where a benchmark records it (extra_info).
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str, name_filter: str = "") -> None:
    data = json.load(open(path))
    rows: dict[str, dict[str, tuple[float, float | None]]] = defaultdict(dict)
    impls: list[str] = []
    for bench in data["benchmarks"]:
        if name_filter not in bench["name"]:
            continue
        test, case = bench["name"].split("[", 1)
        key, impl = case.rstrip("]").rsplit("-", 1)
        rows[f"{test.removeprefix('test_')} {key}"][impl] = (
            bench["stats"]["median"] * 1e6, bench.get("extra_info", {}).get("GB/s"))
        if impl not in impls:
            impls.append(impl)
    impls.sort(key=lambda i: (i != "torch", i))
    print("| case | " + " | ".join(f"{i} (µs)" for i in impls) + " | torch / vllm |")
    print("|---" * (len(impls) + 2) + "|")
    for key in sorted(rows):
        r = rows[key]
        cells = []
        for impl in impls:
            if impl not in r:
                cells.append("-")
                continue
            median, gbs = r[impl]
            cells.append(f"{median:.1f}" + (f" ({gbs:.1f} GB/s)" if gbs else ""))
        ours = [r[i][0] for i in r if i.startswith("vllm")]
        ratio = f"{r['torch'][0] / min(ours):.1f}x" if "torch" in r and ours else "-"
        print(f"| {key} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
