"""Data parallelism against one replica, measured the same way: `vllm serve`
with --data-parallel-size 1 and 2 (each replica an equal share of the CPUs),
loaded by `vllm bench serve` with the same requests, one after the other.

    python bench/e2e/data_parallel.py --num-prompts 64 --max-concurrency 16

Prints one JSON line per setting (throughput, TTFT, TPOT medians)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(dp: int, max_model_len: int):
    port = _free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    exe = os.path.join(os.path.dirname(sys.executable), "vllm")
    proc = subprocess.Popen([exe, "serve", "--port", str(port), "--data-parallel-size", str(dp),
                             "--max-model-len", str(max_model_len), "--disable-log-requests"],
                            stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise SystemExit("vllm serve did not start:\n" + open(log.name).read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--max-model-len", type=int, default=1024)
    args = parser.parse_args()
    exe = os.path.join(os.path.dirname(sys.executable), "vllm")
    for dp in (int(x) for x in args.sizes.split(",")):
        proc, url = _serve(dp, args.max_model_len)
        try:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                subprocess.run([exe, "bench", "serve", "--base-url", url, "--num-prompts",
                                str(args.num_prompts), "--max-concurrency",
                                str(args.max_concurrency), "--output-json", out.name],
                               check=True, capture_output=True)
                result = json.load(open(out.name))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        keep = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
        keep.update({k: result[k].get("median") for k in ("ttft_ms", "tpot_ms")
                     if isinstance(result.get(k), dict)})
        print(json.dumps({"data_parallel_size": dp, **keep}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
