"""`vllm bench serve`: load an OpenAI-compatible server (ours or any other)
with streaming completions and report what vLLM's serving benchmark
reports, with its definitions:

* TTFT: request sent -> first streamed token;
* ITL: gaps between successive streamed chunks;
* TPOT: (E2E - TTFT) / (output tokens - 1), per request;
* E2EL: request sent -> last byte;
* request / output / total token throughput over the run's duration;
* goodput: requests per second that met every SLO given with --goodput.

Arrivals follow a Poisson process at --request-rate (inf: all at once),
capped at --max-concurrency requests in flight."""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import numpy as np


def add_serve_bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--endpoint", default="/v1/completions")
    parser.add_argument("--model", default=None, help="model name (default: the server's first)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer for random prompts (default: the embedded model's)")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--random-input-len", type=int, default=158)
    parser.add_argument("--random-output-len", type=int, default=128)
    parser.add_argument("--request-rate", type=float, default=float("inf"))
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--goodput", nargs="*", default=[],
                        help="SLOs as metric:ms, e.g. ttft:500 tpot:50 e2el:5000")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-json", default=None)


@dataclass
class RequestResult:
    ok: bool = False
    ttft: float = 0.0
    latency: float = 0.0
    output_tokens: int = 0
    prompt_tokens: int = 0
    itl: list[float] = field(default_factory=list)
    error: str = ""


async def _one(client, url, headers, payload, prompt_len) -> RequestResult:
    result = RequestResult(prompt_tokens=prompt_len)
    start = last = time.perf_counter()
    chunks = 0
    try:
        async with client.stream("POST", url, json=payload, headers=headers) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                if data == "[DONE]":
                    break
                body = json.loads(data)
                if body.get("usage"):
                    result.output_tokens = body["usage"].get("completion_tokens", 0)
                    result.prompt_tokens = body["usage"].get("prompt_tokens", prompt_len)
                choices = body.get("choices") or []
                if not choices or not (choices[0].get("text") or
                                       (choices[0].get("delta") or {}).get("content")):
                    continue
                now = time.perf_counter()
                if chunks == 0:
                    result.ttft = now - start
                else:
                    result.itl.append(now - last)
                last = now
                chunks += 1
        result.latency = time.perf_counter() - start
        result.output_tokens = result.output_tokens or chunks
        result.ok = chunks > 0
    except Exception as exc:  # counted as a failed request
        result.error = repr(exc)
    return result


def _stats(values_s: list[float]) -> dict:
    if not values_s:
        return {"mean": 0.0, "median": 0.0, "std": 0.0, "p99": 0.0}
    ms = np.array(values_s) * 1000
    return {"mean": float(ms.mean()), "median": float(np.median(ms)), "std": float(ms.std()),
            "p99": float(np.percentile(ms, 99))}


def _parse_slos(items: list[str]) -> dict[str, float]:
    slos = {}
    for item in items:
        name, _, value = item.partition(":")
        if name not in ("ttft", "tpot", "e2el") or not value:
            raise SystemExit(f"--goodput {item!r}: use ttft:MS, tpot:MS or e2el:MS")
        slos[name] = float(value) / 1000
    return slos


async def _run(args) -> dict:
    import httpx

    from vllm.benchmarks.datasets import dataset_requests, random_requests
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(timeout=httpx.Timeout(3600.0), limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=None)) as client:
        model = args.model
        if model is None:
            models = (await client.get(f"{args.base_url}/v1/models", headers=headers)).json()
            model = models["data"][0]["id"]
        tokenizer = _tokenizer(args.tokenizer)
        if args.dataset:
            requests = dataset_requests(args.dataset, tokenizer, args.num_prompts,
                                        args.random_output_len, args.seed)
        else:
            requests = random_requests(tokenizer, args.num_prompts, args.random_input_len,
                                       args.random_output_len, args.seed)
        url = f"{args.base_url}{args.endpoint}"
        chat = args.endpoint.endswith("/chat/completions")
        rng = random.Random(args.seed)
        limit = asyncio.Semaphore(args.max_concurrency or len(requests))

        async def send(request):
            prompt = request.prompt
            if chat and isinstance(prompt, list):
                prompt = tokenizer.decode(prompt)
            body = {"model": model, "max_tokens": request.output_len, "stream": True,
                    "stream_options": {"include_usage": True}, "ignore_eos": True,
                    "temperature": 0.0}
            body.update({"messages": [{"role": "user", "content": prompt}]} if chat
                        else {"prompt": prompt})
            async with limit:
                return await _one(client, url, headers, body, request.prompt_len)

        start = time.perf_counter()
        tasks = []
        for request in requests:
            tasks.append(asyncio.create_task(send(request)))
            if args.request_rate != float("inf"):
                await asyncio.sleep(rng.expovariate(args.request_rate))
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    return _summarize(args, model, results, duration)


def _tokenizer(name: str | None):
    from vllm.transformers_utils.model_resolver import resolve_model
    from vllm.transformers_utils.tokenizer import get_tokenizer
    return get_tokenizer(resolve_model(name))


def _summarize(args, model, results: list[RequestResult], duration: float) -> dict:
    done = [r for r in results if r.ok]
    tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in done if r.output_tokens > 1]
    output_tokens = sum(r.output_tokens for r in done)
    prompt_tokens = sum(r.prompt_tokens for r in done)
    slos = _parse_slos(args.goodput)
    good = 0
    for r in done:
        tpot = (r.latency - r.ttft) / (r.output_tokens - 1) if r.output_tokens > 1 else 0.0
        if (r.ttft <= slos.get("ttft", float("inf")) and tpot <= slos.get("tpot", float("inf"))
                and r.latency <= slos.get("e2el", float("inf"))):
            good += 1
    result = {
        "model": model, "base_url": args.base_url, "request_rate": args.request_rate,
        "max_concurrency": args.max_concurrency, "duration": duration,
        "completed": len(done), "failed": len(results) - len(done),
        "errors": sorted({r.error for r in results if r.error})[:5],
        "total_input_tokens": prompt_tokens, "total_output_tokens": output_tokens,
        "request_throughput": len(done) / duration,
        "output_throughput": output_tokens / duration,
        "total_token_throughput": (prompt_tokens + output_tokens) / duration,
        "request_goodput": good / duration if slos else None,
        "ttft_ms": _stats([r.ttft for r in done]), "tpot_ms": _stats(tpots),
        "itl_ms": _stats([gap for r in done for gap in r.itl]),
        "e2el_ms": _stats([r.latency for r in done]),
    }
    _print(result)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def _print(r: dict) -> None:
    print(f"{' Serving Benchmark Result ':=^60}")
    for label, value in (("Successful requests", r["completed"]),
                         ("Failed requests", r["failed"]),
                         ("Benchmark duration (s)", f"{r['duration']:.2f}"),
                         ("Total input tokens", r["total_input_tokens"]),
                         ("Total generated tokens", r["total_output_tokens"]),
                         ("Request throughput (req/s)", f"{r['request_throughput']:.2f}"),
                         ("Output token throughput (tok/s)", f"{r['output_throughput']:.2f}"),
                         ("Total token throughput (tok/s)", f"{r['total_token_throughput']:.2f}")):
        print(f"{label:<40}{value:>20}")
    if r["request_goodput"] is not None:
        print(f"{'Request goodput (req/s)':<40}{r['request_goodput']:>20.2f}")
    for key, name in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"),
                      ("e2el_ms", "E2E latency")):
        s = r[key]
        print(f"{name + ' mean/median/p99 (ms)':<40}"
              f"{s['mean']:>8.2f}{s['median']:>8.2f}{s['p99']:>8.2f}"[:60])
    print("=" * 60)


def run_serve_bench(args) -> dict:
    return asyncio.run(_run(args))
