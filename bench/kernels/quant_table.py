"""The table of bench/kernels/test_quant_bench.py's JSON: per shape, the
median time of each implementation, the 4-bit paths' speed-up over bf16,
and the weight bytes read per second.

    python bench/kernels/quant_table.py quant.json
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    data = json.load(open(path))
    rows: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        shape, impl = bench["params"]["shape"], bench["params"]["impl"]
        median = bench["stats"]["median"]
        rows["x".join(map(str, shape))][impl] = (median, bench["extra_info"]["bytes"] / median / 1e9)
    print("| M x N x K | bf16 us (GB/s) | q4 int8 us (GB/s) | q4 bf16 us | int8 / bf16 | bf16-expand / bf16 |")
    print("|---|---|---|---|---|---|")
    for shape, impls in rows.items():
        def cell(name):
            return f"{impls[name][0] * 1e6:.0f} ({impls[name][1]:.1f})" if name in impls else "-"
        base = impls.get("bf16", (None,))[0]
        ratio = lambda name: f"{base / impls[name][0]:.2f}x" if base and name in impls else "-"  # noqa: E731
        q4bf16 = f"{impls['q4bf16'][0] * 1e6:.0f}" if "q4bf16" in impls else "-"
        print(f"| {shape} | {cell('bf16')} | {cell('q4int8')} | {q4bf16} | {ratio('q4int8')} | {ratio('q4bf16')} |")


if __name__ == "__main__":
    main(sys.argv[1])
