"""A real `vllm serve` process on a free loopback port, for the tests."""
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RemoteServer:
    def __init__(self, args: list[str] | None = None, env: dict | None = None,
                 timeout: float = 240.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        exe = os.path.join(os.path.dirname(sys.executable), "vllm")
        # the installed `vllm` script; where vllm is only on PYTHONPATH (an
        # unpacked wheel, as on a lent GPU machine), its module
        command = ([exe] if os.path.exists(exe)
                   else [sys.executable, "-m", "vllm.entrypoints.cli.main"])
        full_env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", **(env or {}))
        self.proc = subprocess.Popen([*command, "serve", "--port", str(self.port), *(args or [])],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode}:\n"
                                   + self.read_log())
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("vllm serve did not become healthy:\n" + self.read_log())

    def read_log(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    def engine_pid(self) -> int:
        match = re.search(r"engine core process (\d+) ready", self.read_log())
        assert match, self.read_log()
        return int(match.group(1))

    def metric(self, name: str) -> float:
        """One unlabelled-or-single-series value from /metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        match = re.search(rf"^{re.escape(name)}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.M)
        assert match, f"{name} missing from /metrics"
        return float(match.group(1))

    def client(self, api_key: str = "EMPTY", **kwargs):
        import openai
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0,
                             **kwargs)

    def async_client(self, api_key: str = "EMPTY"):
        import openai
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)
