"""Data parallelism against one replica, measured the same way: `vllm serve`
with --data-parallel-size 1 and 2 (each replica an equal share of the CPUs),
loaded by `vllm bench serve` with the same requests, one after the other.

    python bench/e2e/data_parallel.py --num-prompts 64 --max-concurrency 16

Prints one JSON line per setting (throughput, TTFT, TPOT medians)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from local_server import LocalServer  # bench/e2e is on sys.path when run as a script



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--max-model-len", type=int, default=1024)
    args = parser.parse_args()
    exe = os.path.join(os.path.dirname(sys.executable), "vllm")
    for dp in (int(x) for x in args.sizes.split(",")):
        server = LocalServer(["--data-parallel-size", str(dp), "--max-model-len",
                              str(args.max_model_len), "--disable-log-requests"], kv_cache_gib=1)
        url = server.url
        try:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                subprocess.run([exe, "bench", "serve", "--base-url", url, "--num-prompts",
                                str(args.num_prompts), "--max-concurrency",
                                str(args.max_concurrency), "--output-json", out.name],
                               check=True, capture_output=True)
                result = json.load(open(out.name))
        finally:
            server.stop()
        keep = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
        keep.update({k: result[k].get("median") for k in ("ttft_ms", "tpot_ms")
                     if isinstance(result.get(k), dict)})
        print(json.dumps({"data_parallel_size": dp, **keep}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
