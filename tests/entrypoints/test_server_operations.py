"""The server under load and failure: 64 concurrent streams, clients that
leave mid-stream (their KV blocks come back), API keys, dev and profiler
routes, and the engine process dying."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import httpx
import openai
import pytest

from tests.entrypoints.server import RemoteServer

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def server():
    s = RemoteServer(["--max-num-seqs", "64"])
    yield s
    s.stop()


def test_64_concurrent_streams_then_half_disconnect_frees_the_cache(server):
    async def full_stream(client, i):
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Tell me fact number {i}."}],
            max_tokens=24, temperature=0.8, seed=i, stream=True)
        text, finish = [], None
        async for chunk in stream:
            for c in chunk.choices:
                text.append(c.delta.content or "")
                finish = c.finish_reason or finish
        return "".join(text), finish

    async def leave_early(client, i):
        stream = await client.completions.create(
            model=MODEL, prompt=f"Write a long essay about topic {i}:", max_tokens=400,
            stream=True, extra_body={"ignore_eos": True})
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.close()
        return seen

    async def main():
        client = server.async_client()
        results = await asyncio.gather(*[full_stream(client, i) for i in range(64)])
        left = await asyncio.gather(*[leave_early(client, i) for i in range(32)],
                                    *[full_stream(client, i) for i in range(32)])
        await client.close()
        return results, left

    results, left = asyncio.run(main())
    assert len(results) == 64 and all(finish in ("stop", "length") and text
                                      for text, finish in results)
    assert all(n == 3 for n in left[:32])
    assert all(finish in ("stop", "length") for _, finish in left[32:])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (server.metric("vllm:kv_cache_usage_perc") > 0
                                           or server.metric("vllm:num_requests_running") > 0):
        time.sleep(0.2)
    assert server.metric("vllm:kv_cache_usage_perc") == 0.0
    assert server.metric("vllm:num_requests_running") == 0.0
    assert server.metric("vllm:num_requests_waiting") == 0.0
    assert server.metric("vllm:generation_tokens_total") > 64 * 5
    text = httpx.get(f"{server.url}/metrics").text
    assert 'vllm:request_success_total{finished_reason="abort"' in text
    assert "vllm:time_to_first_token_seconds_count" in text
    assert "vllm:e2e_request_latency_seconds_bucket" in text


def test_prefix_cache_hits_show_in_metrics(server):
    client = server.client()
    long_prompt = "You are a careful assistant. " * 20 + "Say hi."
    for _ in range(2):
        client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=2)
    assert server.metric("vllm:prefix_cache_hits_total") > 0
    assert 0 < server.metric("vllm:prefix_cache_hit_rate") <= 1


def test_api_key_guards_v1_routes_only():
    # several valid keys: the flag repeated, and a comma list
    s = RemoteServer(["--api-key", "sekrit", "--api-key", "second, third"])
    try:
        for key in ("second", "third"):
            assert s.client(api_key=key).models.list().data[0].id == MODEL
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="second, third").models.list()
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="sekri").models.list()  # a prefix is not the key
        # vLLM's rule: only /v1 needs a key; these stay open
        assert httpx.get(f"{s.url}/metrics").status_code == 200
        assert httpx.get(f"{s.url}/version").status_code == 200
        assert httpx.get(f"{s.url}/ping").status_code == 200
        tokens = httpx.post(f"{s.url}/tokenize", json={"prompt": "hi"}).json()["tokens"]
        assert httpx.post(f"{s.url}/detokenize", json={"tokens": tokens}).json()["prompt"] == "hi"
        r = httpx.post(f"{s.url}/v1/chat/completions", headers={"Authorization": "Basic sekrit"},
                       json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 401  # the key, but not as a bearer token
        with pytest.raises(openai.AuthenticationError):
            s.client().models.list()
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").completions.create(model=MODEL, prompt="hi", max_tokens=1)
        r = httpx.post(f"{s.url}/v1/completions", json={"prompt": "hi"})
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        assert [m.id for m in s.client(api_key="sekrit").models.list().data] == [MODEL]
        assert httpx.get(f"{s.url}/health").status_code == 200
    finally:
        s.stop()


def test_api_key_from_environment_and_dev_and_profiler_routes(tmp_path):
    s = RemoteServer(env={"VLLM_API_KEY": "envkey", "VLLM_SERVER_DEV_MODE": "1",
                          "VLLM_TORCH_PROFILER_DIR": str(tmp_path)})
    try:
        assert httpx.get(f"{s.url}/v1/models").status_code == 401
        assert s.client(api_key="envkey").models.list().data[0].id == MODEL
        assert httpx.post(f"{s.url}/reset_prefix_cache").status_code == 200
        assert httpx.post(f"{s.url}/start_profile").status_code == 200
        s.client(api_key="envkey").completions.create(model=MODEL, prompt="hi", max_tokens=2)
        trace = httpx.post(f"{s.url}/stop_profile", timeout=60).json()["trace"]
        assert os.path.dirname(trace) == str(tmp_path) and os.path.getsize(trace) > 0
    finally:
        s.stop()


def test_engine_death_makes_the_server_exit_nonzero():
    s = RemoteServer()
    try:
        os.kill(s.engine_pid(), signal.SIGKILL)
        assert s.proc.wait(20) != 0
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        s.stop()


def test_keep_alive_on_engine_death_answers_with_errors():
    s = RemoteServer(env={"VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": "1"})
    try:
        os.kill(s.engine_pid(), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and httpx.get(f"{s.url}/health").status_code == 200:
            time.sleep(0.2)
        assert httpx.get(f"{s.url}/health").status_code == 503
        r = httpx.post(f"{s.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        assert r.status_code in (500, 503) and "engine is dead" in r.json()["error"]["message"]
        assert s.proc.poll() is None
    finally:
        s.stop()


def test_step_longer_than_iteration_timeout_kills_the_server():
    # A zero-second budget: the first step with a request in flight is "too long".
    s = RemoteServer(env={"VLLM_ENGINE_ITERATION_TIMEOUT_S": "0"})
    try:
        r = httpx.post(f"{s.url}/v1/completions", json={"prompt": "hi", "max_tokens": 50,
                                                        "ignore_eos": True}, timeout=30)
        assert r.status_code == 500 and "VLLM_ENGINE_ITERATION_TIMEOUT_S" in r.text
        assert s.proc.wait(20) != 0
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        s.stop()


def test_chat_template_flag_replaces_the_models_template(tmp_path):
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n"
                        "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")
    s = RemoteServer(["--chat-template", str(template), "--served-model-name", "plain",
                      "--trust-request-chat-template"])
    try:
        # Trusted: a request's own template and its kwargs render, in Jinja's sandbox.
        greeting = s.client().chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "Hello there"}], max_tokens=1,
            extra_body={"chat_template": "{{ greeting }}|{{ messages[0]['content'] }}",
                        "chat_template_kwargs": {"greeting": "Hi"}})
        plain = httpx.post(f"{s.url}/tokenize", json={"prompt": "Hi|Hello there",
                                                      "add_special_tokens": False})
        assert greeting.usage.prompt_tokens == plain.json()["count"]
        escape = httpx.post(f"{s.url}/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "x"}], "max_tokens": 1,
            "chat_template": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})
        assert escape.status_code == 400, escape.text
        assert "chat template" in escape.json()["error"]["message"]
        messages = [{"role": "user", "content": "Hello there"}]
        via_chat = httpx.post(f"{s.url}/tokenize", json={"messages": messages}).json()["tokens"]
        expected = httpx.post(f"{s.url}/tokenize",
                              json={"prompt": "[user] Hello there\n[assistant] ",
                                    "add_special_tokens": False}).json()["tokens"]
        assert via_chat == expected
        out = s.client().chat.completions.create(model="plain", messages=messages,
                                                 max_tokens=3)
        assert out.usage.prompt_tokens == len(expected)
    finally:
        s.stop()


def test_a_port_in_use_fails_at_once_in_one_line():
    # the port is bound before the model loads (and before any worker picks
    # a port of its own): taken, the command ends at once with one line
    import socket
    import subprocess
    import sys
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exe = os.path.join(os.path.dirname(sys.executable), "vllm")
        start = time.monotonic()
        out = subprocess.run([exe, "serve", "--port", str(port)], capture_output=True,
                             text=True, timeout=120,
                             env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1"))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"vllm serve: error: [Errno 98] cannot serve on 127.0.0.1:{port}: "
        "Address already in use"), out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "KV cache" not in out.stdout + out.stderr
    assert time.monotonic() - start < 30


def _socket_dirs(base) -> list[str]:
    return sorted(n for n in os.listdir(base) if n.startswith("vllm-ipc-"))


def test_engine_process_exits_when_the_api_process_is_killed(tmp_path):
    s = RemoteServer(env={"VLLM_RPC_BASE_PATH": str(tmp_path)})
    assert len(_socket_dirs(tmp_path)) == 1
    engine_pid = s.engine_pid()
    s.proc.kill()  # SIGKILL: no chance to shut the engine down
    s.proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(engine_pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{engine_pid}/stat") as f:
            if f.read().split()[2] == "Z":  # exited, waiting to be reaped
                break
        time.sleep(0.2)
    else:
        os.kill(engine_pid, signal.SIGKILL)
        raise AssertionError("engine core outlived its API process")
    time.sleep(0.5)
    # The orphaned core removed the socket directory its killed parent could not.
    assert _socket_dirs(tmp_path) == []
    s.stop()


def test_sigterm_shuts_the_engine_down_and_exits_zero(tmp_path):
    s = RemoteServer(env={"VLLM_RPC_BASE_PATH": str(tmp_path)})
    engine_pid = s.engine_pid()
    s.proc.terminate()
    assert s.proc.wait(30) == 0
    assert _socket_dirs(tmp_path) == []
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{engine_pid}") or open(
        f"/proc/{engine_pid}/stat").read().split()[2] == "Z"
    assert "is gone" not in s.read_log()  # shut down by the server, not by the orphan check
    s.stop()


# slow: a two-replica server started and killed (~15 s); CI's slow step runs it.
@pytest.mark.slow
def test_data_parallel_server_balances_and_dies_whole(tmp_path):
    s = RemoteServer(["--data-parallel-size", "2", "--max-model-len", "512"],
                     env={"VLLM_RPC_BASE_PATH": str(tmp_path)})
    try:
        engines = [int(pid) for pid in re.findall(r"engine core process (\d+) ready",
                                                   s.read_log())]
        assert len(engines) == 2 and len(_socket_dirs(tmp_path)) == 2
        assert re.search(r"rank 0 bound to CPUs", s.read_log())
        assert re.search(r"rank 1 bound to CPUs", s.read_log())

        async def many():
            client = s.async_client()
            return await asyncio.gather(*[client.completions.create(
                model=MODEL, prompt=f"Count to {i}:", max_tokens=8, temperature=0)
                for i in range(8)])

        outs = asyncio.run(many())
        assert all(o.usage.completion_tokens == 8 for o in outs)
        assert s.metric("vllm:num_requests_running") == 0
        # one replica dies: every request fails and the server exits non-zero
        os.kill(engines[1], signal.SIGKILL)
        assert s.proc.wait(30) == 1
        assert "data-parallel rank 1 exited" in s.read_log()
        time.sleep(1)
        for pid in engines:
            assert not os.path.exists(f"/proc/{pid}") or open(
                f"/proc/{pid}/stat").read().split()[2] == "Z"
        assert _socket_dirs(tmp_path) == []
    finally:
        s.stop()
