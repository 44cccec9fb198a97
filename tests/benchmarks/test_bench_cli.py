"""`vllm bench throughput | latency | serve` as a user runs them (small
sizes, dummy weights where the numbers don't matter): the counts in their
JSON reports must match what was asked."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.entrypoints.server import RemoteServer


def _vllm(args, timeout=600):
    exe = os.path.join(os.path.dirname(sys.executable), "vllm")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1"))


def test_bench_throughput_random_and_dataset(tmp_path):
    out_json = tmp_path / "tp.json"
    out = _vllm(["bench", "throughput", "--load-format", "dummy", "--num-prompts", "4",
                 "--input-len", "16", "--output-len", "5", "--output-json", str(out_json)])
    assert out.returncode == 0, out.stderr
    assert "Throughput:" in out.stdout
    result = json.loads(out_json.read_text())
    assert result["num_requests"] == 4 and result["total_output_tokens"] == 20
    assert result["total_num_tokens"] == 4 * 16 + 20
    assert result["output_tokens_per_second"] > 0
    dataset = tmp_path / "data.json"
    dataset.write_text(json.dumps([{"prompt": "Tell me a joke.", "output_len": 3},
                                   {"conversations": [{"value": "Hi there"},
                                                      {"value": "Hello! How are you?"}]}]))
    out = _vllm(["bench", "throughput", "--load-format", "dummy", "--dataset", str(dataset),
                 "--num-prompts", "2", "--output-json", str(out_json)])
    assert out.returncode == 0, out.stderr
    assert json.loads(out_json.read_text())["num_requests"] == 2


def test_bench_latency(tmp_path):
    out_json = tmp_path / "lat.json"
    out = _vllm(["bench", "latency", "--load-format", "dummy", "--batch-size", "2",
                 "--input-len", "8", "--output-len", "4", "--num-iters", "2",
                 "--num-iters-warmup", "0", "--output-json", str(out_json)])
    assert out.returncode == 0, out.stderr
    result = json.loads(out_json.read_text())
    assert len(result["latencies"]) == 2 and result["avg_latency"] > 0
    assert "Avg latency" in out.stdout


def test_bench_serve_against_a_real_server(tmp_path):
    server = RemoteServer()
    try:
        out_json = tmp_path / "serve.json"
        out = _vllm(["bench", "serve", "--base-url", server.url, "--num-prompts", "8",
                     "--random-input-len", "16", "--random-output-len", "6",
                     "--request-rate", "50", "--max-concurrency", "4",
                     "--goodput", "e2el:600000", "--output-json", str(out_json)])
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads(out_json.read_text())
        assert result["completed"] == 8 and result["failed"] == 0
        assert result["total_output_tokens"] == 8 * 6
        assert result["total_input_tokens"] == 8 * 16
        assert result["request_goodput"] == result["request_throughput"]
        assert 0 < result["ttft_ms"]["median"] <= result["e2el_ms"]["median"]
        assert result["tpot_ms"]["mean"] > 0 and result["itl_ms"]["p99"] > 0
        assert "Serving Benchmark Result" in out.stdout
        chat = _vllm(["bench", "serve", "--base-url", server.url, "--endpoint",
                      "/v1/chat/completions", "--num-prompts", "2", "--random-input-len", "8",
                      "--random-output-len", "4"])
        assert chat.returncode == 0, chat.stdout + chat.stderr
    finally:
        server.stop()
