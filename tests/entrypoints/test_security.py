"""The server against what vLLM's security advisories found: clients that
leave, oversized or over-deep requests, slow clients, request chat
templates, foreign frames on the engine sockets, and tenants sharing the
prefix cache. Every check runs against a real `vllm serve` process."""
from __future__ import annotations

import os
import pickle
import socket
import stat
import time

import httpx
import pytest

from tests.entrypoints.server import RemoteServer

MODEL = "SmolLM2-135M-Instruct"
MAX_SEQS = 8


@pytest.fixture(scope="module")
def rpc_base(tmp_path_factory):
    return tmp_path_factory.mktemp("rpc")


@pytest.fixture(scope="module")
def server(rpc_base):
    s = RemoteServer(["--max-num-seqs", str(MAX_SEQS), "--max-model-len", "2048",
                      "--timeout-header", "1.5", "--limit-concurrency", "24"],
                     env={"VLLM_RPC_BASE_PATH": str(rpc_base)})
    yield s
    s.stop()


def _idle(server) -> bool:
    return (server.metric("vllm:num_requests_running") == 0
            and server.metric("vllm:kv_cache_usage_perc") == 0)


def _post(server, path, body, **kwargs):
    return httpx.post(f"{server.url}{path}", json=body, timeout=30, **kwargs)


def _error_message(r: httpx.Response, status: int = 400) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == status
    return error["message"]


# ------------------------------------------------------------ disconnects
@pytest.mark.parametrize("route, body", [
    ("/v1/completions", {"prompt": "Tell me a long story.", "n": 6, "max_tokens": 900,
                         "ignore_eos": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "A long story."}],
                              "n": 6, "max_tokens": 900, "ignore_eos": True}),
])
def test_non_streaming_request_is_aborted_when_its_client_leaves(server, route, body):
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}{route}", json=body, timeout=2.0)
    gone = time.monotonic()
    while not _idle(server):
        assert time.monotonic() - gone < 1.0, "request still running 1 s after its client left"
        time.sleep(0.05)
    assert "client disconnected: request aborted" in server.read_log()


# ------------------------------------------------------------ request bounds
@pytest.mark.parametrize("body, needle", [
    ({"prompt": "hi", "n": 100000, "max_tokens": 5}, f"n must be at most {MAX_SEQS}"),
    ({"prompt": "hi", "n": 64882985}, f"n must be at most {MAX_SEQS}"),
    ({"prompt": "hi", "max_tokens": 10**9}, "maximum context length is 2048"),
    ({"prompt": "hi", "max_tokens": 2048}, "(1 in the prompt, 2048 in the completion)"),
    ({"prompt": "hi", "logprobs": 21}, "greater than max allowed: 20"),
    ({"prompt": "hi", "stop": ["x"] * 65}, "at most 64 strings"),
    ({"prompt": "hi", "stop": ["y" * 1025]}, "at most 1024 characters"),
    ({"prompt": "hi", "logit_bias": {str(i): 1 for i in range(301)}}, "at most 300 entries"),
    ({"prompt": "hi", "logit_bias": {"5": 1000}}, "logit_bias values must be in"),
    ({"prompt": "hi", "logit_bias": {"999999999": 1}}, "out of vocabulary"),
    ({"prompt": "hi", "logit_bias": {"abc": 1}}, "token ids"),
    ({"prompt": "hi", "bad_words": ["w"] * 65}, "bad_words may hold at most 64"),
    ({"prompt": "hi", "stop_token_ids": list(range(1025))}, "stop_token_ids"),
    ({"prompt": ["hi"] * 1025}, "at most 1024 prompts"),
    ({"prompt": "x" * 2_000_000}, "characters, more than any 2048-token text"),
    ({"prompt": "hi", "cache_salt": ""}, "cache_salt"),
])
def test_completion_bounds_give_400_at_once(server, body, needle):
    start = time.monotonic()
    message = _error_message(_post(server, "/v1/completions", body))
    assert needle in message
    assert time.monotonic() - start < 2.0
    assert _idle(server)


@pytest.mark.parametrize("extra, needle", [
    ({"n": 9}, f"n must be at most {MAX_SEQS}"),
    ({"max_tokens": 10**7}, "in the messages"),
    ({"logprobs": True, "top_logprobs": 21}, "greater than max allowed: 20"),
    ({"chat_template": "{{ messages }}"}, "--trust-request-chat-template is not set"),
    ({"chat_template_kwargs": {"tokenize": True}}, "may not set tokenize"),
    ({"chat_template_kwargs": {f"k{i}": i for i in range(17)}}, "at most 16 entries"),
    ({"chat_template_kwargs": {"k": "v" * 5000}}, "4096 bytes"),
])
def test_chat_bounds_give_400_at_once(server, extra, needle):
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    assert needle in _error_message(_post(server, "/v1/chat/completions", body))


def test_logit_bias_steers_greedy_decoding(server):
    tokens = _post(server, "/tokenize", {"prompt": " banana", "add_special_tokens": False})
    target = tokens.json()["tokens"][0]
    body = {"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0,
            "logit_bias": {str(target): 100}}
    out = _post(server, "/v1/completions", body).json()["choices"][0]["text"]
    assert out == " banana" * 3


def test_deeply_nested_body_is_refused_before_parsing(server):
    deep = b'{"prompt": "hi", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = httpx.post(f"{server.url}/v1/completions", content=deep,
                   headers={"content-type": "application/json"}, timeout=30)
    assert "nested 100001 levels deep" in _error_message(r)
    shallow = b'{"prompt": "hi", "max_tokens": 1, "x": ' + b"[" * 40 + b"]" * 40 + b"}"
    r = httpx.post(f"{server.url}/v1/completions", content=shallow,
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text


# ------------------------------------------------------------ slow clients
def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def test_connections_that_trickle_headers_are_closed(server):
    silent = socket.create_connection(("127.0.0.1", server.port))
    trickle = socket.create_connection(("127.0.0.1", server.port))
    trickle.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    try:
        start = time.monotonic()
        assert _closed_within(silent, 5.0)
        assert _closed_within(trickle, 5.0)
        assert time.monotonic() - start < 4.0  # --timeout-header 1.5
    finally:
        silent.close()
        trickle.close()
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_connections_beyond_the_limit_get_503(server):
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(24)]
    try:
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 503
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while httpx.get(f"{server.url}/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


# ------------------------------------------------------------ engine sockets
def _socket_dir(rpc_base) -> str:
    (name,) = [n for n in os.listdir(rpc_base) if n.startswith("vllm-ipc-")]
    return os.path.join(rpc_base, name)


def test_engine_sockets_live_in_a_private_directory(server, rpc_base):
    path = _socket_dir(rpc_base)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert os.stat(path).st_uid == os.getuid()
    assert sorted(os.listdir(path)) == ["in.ipc", "out.ipc"]


class _OpensAFile:
    """Unpickling this creates the marker file: pickle runs what it is told."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_foreign_frames_on_the_engine_sockets_are_dropped(server, rpc_base, tmp_path):
    import msgpack
    import zmq
    marker = tmp_path / "pwned"
    frames = [b"\x00garbage\xff" * 10, pickle.dumps(_OpensAFile(str(marker))),
              msgpack.packb(["AddRequest", [["not", "a", "request"]]]),
              msgpack.packb(["EngineReady", [1]]),  # a kind the core never takes
              msgpack.packb(["os.system", ["touch " + str(marker)]]),
              msgpack.packb({"kind": "AddRequest"})]
    context = zmq.Context()
    try:
        for name in ("in.ipc", "out.ipc"):  # the core's input, the server's output
            pusher = context.socket(zmq.PUSH)
            pusher.connect(f"ipc://{os.path.join(_socket_dir(rpc_base), name)}")
            for frame in frames:
                pusher.send(frame)
            pusher.close(linger=2000)
    finally:
        context.term()
    time.sleep(0.5)
    out = _post(server, "/v1/completions", {"prompt": "Hello", "max_tokens": 4})
    assert out.status_code == 200 and out.json()["usage"]["completion_tokens"] == 4
    assert not marker.exists()
    log = server.read_log()
    assert "dropped a malformed message on the engine core's input socket" in log
    assert "dropped a malformed message on the engine output socket" in log
    assert httpx.get(f"{server.url}/health").status_code == 200


# ------------------------------------------------------------ prefix cache tenants
def test_cache_salt_keeps_tenants_apart(server):
    prompt = "Tenant isolation matters. " * 40  # several full blocks

    def hits_after(salt):
        before = server.metric("vllm:prefix_cache_hits_total")
        body = {"prompt": prompt, "max_tokens": 1}
        if salt is not None:
            body["cache_salt"] = salt
        assert _post(server, "/v1/completions", body).status_code == 200
        return server.metric("vllm:prefix_cache_hits_total") - before

    hits_after("alice")
    assert hits_after("bob") == 0
    assert hits_after(None) == 0
    assert hits_after("alice") > 0
    chat = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 1}
    assert _post(server, "/v1/chat/completions", dict(chat, cache_salt="carol")).status_code == 200
    before = server.metric("vllm:prefix_cache_hits_total")
    _post(server, "/v1/chat/completions", dict(chat, cache_salt="dave"))
    assert server.metric("vllm:prefix_cache_hits_total") == before
