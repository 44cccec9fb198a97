"""`vllm serve` through the official openai client: completions, chat,
streaming, n, logprobs, stop strings, usage, models, tokenize; and every
bad input answered with an OpenAI-style error while the server lives on."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.entrypoints.server import RemoteServer

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server():
    s = RemoteServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def test_models_lists_the_served_model(client, server):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert httpx.get(f"{server.url}/version").json()["version"]


def test_chat_completion_answers_with_usage(client, server):
    out = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=30,
                                         temperature=0)
    assert "Paris" in out.choices[0].message.content
    assert out.choices[0].finish_reason == "stop"
    tokens = httpx.post(f"{server.url}/tokenize",
                        json={"messages": QUESTION}).json()["count"]
    assert out.usage.prompt_tokens == tokens
    assert out.usage.total_tokens == tokens + out.usage.completion_tokens


def test_chat_without_sampling_params_uses_the_models_recommendation(client):
    """No temperature/top_p in the request: the embedded model's recommended
    ones (model card: 0.2 / 0.9), which answer sensibly where vLLM's plain
    default (temperature 1.0) answers nonsense."""
    for seed in range(3):
        default = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24,
                                                 seed=seed).choices[0].message.content
        explicit = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24,
                                                  seed=seed, temperature=0.2, top_p=0.9
                                                  ).choices[0].message.content
        assert default == explicit and "Paris" in default


def test_completion_length_and_usage(client):
    out = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=7,
                                    temperature=0, extra_body={"ignore_eos": True})
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 7
    assert out.choices[0].text


def test_streaming_chat_concatenates_to_the_plain_answer(client):
    plain = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=40,
                                           temperature=0).choices[0].message.content
    stream = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=40,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == plain
    assert finish == "stop" and usage is not None and usage.completion_tokens > 0


def test_streaming_completion_matches_plain(client):
    kwargs = dict(model=MODEL, prompt="Once upon a time", max_tokens=16, temperature=0)
    plain = client.completions.create(**kwargs).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kwargs,
                                                                            stream=True)
                       if c.choices)
    assert streamed == plain


def test_n_samples(client):
    out = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12,
                                         temperature=1.0, n=2, seed=3)
    assert sorted(c.index for c in out.choices) == [0, 1]


def test_chat_logprobs(client):
    out = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=5,
                                         temperature=0, logprobs=True, top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-5)


def test_completion_logprobs_and_echo(client):
    out = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=3,
                                    temperature=0, logprobs=2, echo=True)
    choice = out.choices[0]
    assert choice.text.startswith("Hello there")
    assert choice.logprobs.token_logprobs[0] is None  # the first prompt token
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs[1:])


def test_stop_strings_and_seed(client):
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    free = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40,
                                          temperature=0).choices[0].message.content
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40,
                                         temperature=0, stop=["5"])
    assert out.choices[0].message.content == free[:free.index("5")]
    assert out.choices[0].finish_reason == "stop"
    a, b = (client.completions.create(model=MODEL, prompt="Roses are", max_tokens=12,
                                      temperature=1.0, seed=11).choices[0].text
            for _ in range(2))
    assert a == b


def _post(server, path, body, **kwargs):
    return httpx.post(f"{server.url}{path}", timeout=30, **kwargs,
                      **({"content": body} if isinstance(body, (str, bytes)) else {"json": body}))


@pytest.mark.parametrize("body, needle", [
    ('{"prompt": "hi", "max_tokens": ', "JSON"),
    ({"prompt": "hi", "max_tokens": "many"}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "hi", "temperature": -1}, "temperature"),
    ({"prompt": "hi " * 9000, "max_tokens": 4}, "maximum context length"),
    ({"prompt": "hi", "model": "gpt-4"}, "does not exist"),
])
def test_bad_requests_get_400_with_an_openai_error(server, body, needle):
    r = _post(server, "/v1/completions", body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert needle.lower() in error["message"].lower() and error["code"] == 400
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_chat_echo_is_refused_not_ignored(server):
    r = _post(server, "/v1/chat/completions",
              {"messages": [{"role": "user", "content": "hi"}], "echo": True})
    assert r.status_code == 400 and "echo" in r.json()["error"]["message"]


def test_openai_client_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=-0.5)


def test_oversized_body_is_refused(server):
    r = _post(server, "/v1/completions", {"prompt": "x" * (17 << 20)})
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit applies as the body streams in
        yield b'{"prompt": "'
        for _ in range(17):
            yield b"x" * (1 << 20)
        yield b'"}'

    r = httpx.post(f"{server.url}/v1/completions", content=chunks(), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_module_entry_point_serves(tmp_path):
    import subprocess
    import sys

    from tests.entrypoints.server import free_port
    from vllm.transformers_utils.model_resolver import default_model_path
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                             "--model", default_model_path(), "--port", str(port),
                             "--served-model-name", "smol"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(__import__("os").environ, VLLM_CPU_KVCACHE_SPACE="1"))
    try:
        import time
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["smol"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_detokenize_and_dev_routes_absent(server):
    tokens = _post(server, "/tokenize", {"prompt": "Hello world"}).json()["tokens"]
    assert _post(server, "/detokenize", {"tokens": tokens}).json()["prompt"] == "Hello world"
    assert _post(server, "/reset_prefix_cache", {}).status_code == 404
    assert _post(server, "/start_profile", {}).status_code == 404
