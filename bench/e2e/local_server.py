"""A `vllm serve` process on a free loopback port, for the end-to-end
benchmark scripts (the tests have their own, tests/entrypoints/server.py)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx


class LocalServer:
    def __init__(self, flags: list[str], kv_cache_gib: int, timeout_s: float = 300) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        exe = os.path.join(os.path.dirname(sys.executable), "vllm")
        # the child's environment: ours plus its KV-cache size
        child_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}
        self.proc = subprocess.Popen([exe, "serve", "--port", str(self.port), *flags],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=child_env)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SystemExit("vllm serve did not start:\n" + self.read_log())
            time.sleep(0.5)

    def read_log(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    def engine_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"engine core process (\d+) ready", self.read_log())]

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.M)
        return float(match.group(1)) if match else float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
