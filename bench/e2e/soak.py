"""Soak test of `vllm serve`: many clients for many minutes, mixing streams,
plain requests, clients that leave mid-request, bad requests and prompts at
the context limit. Reports whether any request was lost (no valid answer
within 60 s, or an unexpected status), the server's memory (API and engine
processes' RSS) over time, and that nothing is left running afterwards.

    python bench/e2e/soak.py --clients 64 --minutes 10

Numbers go to bench/RESULTS.md by hand, with the machine and the date."""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter, defaultdict

import httpx

from local_server import LocalServer  # bench/e2e is on sys.path when run as a script

ANSWER_WITHIN_S = 60
BAD_BODIES = [
    {"prompt": "hi", "n": 100000, "max_tokens": 5},
    {"prompt": "hi", "max_tokens": 10**9},
    {"prompt": "hi", "temperature": -1},
    {"prompt": "hi", "logprobs": 50},
    {"prompt": "hi", "stop": ["x"] * 100},
    {"prompt": [], "max_tokens": 3},
    {"prompt": "hi", "logit_bias": {"1": 1000}},
]



def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Soak:
    def __init__(self, url: str, max_model_len: int, tokens_per_word: list[int]) -> None:
        self.url = url
        self.max_model_len = max_model_len
        self.filler = tokens_per_word
        self.counts: Counter[str] = Counter()
        self.lost: list[str] = []
        self.latency: defaultdict[str, list[float]] = defaultdict(list)

    async def _stream(self, client, rng, leave_after: int | None) -> str:
        body = {"messages": [{"role": "user", "content": rng.choice(
            ["Tell me about the sea.", "Write a haiku.", "Explain gravity briefly."])}],
            "max_tokens": rng.randint(16, 64), "stream": True, "temperature": 0.7}
        chunks = 0
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return f"status {r.status_code}"
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    chunks += 1
                    if leave_after is not None and chunks >= leave_after:
                        return "left"  # closing the stream disconnects
                    if line == "data: [DONE]":
                        return "ok"
        return "stream ended without [DONE]"

    async def _plain(self, client, rng, leave_after_s: float | None) -> str:
        body = {"prompt": "Once upon a time", "max_tokens": rng.randint(16, 64),
                "temperature": 0.8, "n": rng.choice([1, 1, 2])}
        if leave_after_s is not None:
            try:
                await client.post("/v1/completions", json=body, timeout=leave_after_s)
            except httpx.TimeoutException:
                return "left"
            return "ok"
        r = await client.post("/v1/completions", json=body)
        return "ok" if r.status_code == 200 and r.json()["choices"] else f"status {r.status_code}"

    async def _bad(self, client, rng) -> str:
        r = await client.post("/v1/completions", json=rng.choice(BAD_BODIES))
        return "ok" if r.status_code == 400 and r.json()["error"]["message"] else \
            f"status {r.status_code}"

    async def _longest(self, client, rng) -> str:
        max_tokens = 4
        prompt = (self.filler * self.max_model_len)[:self.max_model_len - max_tokens]
        r = await client.post("/v1/completions", json={"prompt": prompt,
                                                        "max_tokens": max_tokens})
        return "ok" if r.status_code == 200 else f"status {r.status_code}: {r.text[:200]}"

    async def client(self, seed: int, deadline: float) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=self.url, timeout=ANSWER_WITHIN_S) as client:
            while time.monotonic() < deadline:
                kind = rng.choices(["stream", "plain", "stream-leave", "plain-leave", "bad",
                                    "longest"], weights=[35, 25, 15, 10, 10, 5])[0]
                start = time.monotonic()
                try:
                    if kind == "stream":
                        outcome = await self._stream(client, rng, None)
                    elif kind == "stream-leave":
                        outcome = await self._stream(client, rng, rng.randint(2, 6))
                        outcome = "ok" if outcome in ("left", "ok") else outcome
                    elif kind == "plain":
                        outcome = await self._plain(client, rng, None)
                    elif kind == "plain-leave":
                        outcome = await self._plain(client, rng, rng.uniform(0.3, 1.5))
                        outcome = "ok" if outcome in ("left", "ok") else outcome
                    elif kind == "bad":
                        outcome = await self._bad(client, rng)
                    else:
                        outcome = await self._longest(client, rng)
                except Exception as exc:  # no answer in time, a reset: lost
                    outcome = f"{type(exc).__name__}: {exc}"
                self.counts[kind] += 1
                if outcome == "ok":
                    self.latency[kind].append(time.monotonic() - start)
                else:
                    self.lost.append(f"{kind}: {outcome}")



async def _sample_rss(pids: dict[str, int], deadline: float, every_s: float,
                      samples: list) -> None:
    start = time.monotonic()
    while time.monotonic() < deadline:
        samples.append((round(time.monotonic() - start, 1),
                        {name: round(_rss_mb(pid), 1) for name, pid in pids.items()}))
        await asyncio.sleep(every_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10)
    # The KV cache is a lazily touched mapping and the block pool hands out
    # the least recently freed block, so the engine's RSS grows by the whole
    # cache (2 GiB here) over the first minutes of load; flat is measured after.
    parser.add_argument("--warmup-minutes", type=float, default=4)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args()

    server = LocalServer(["--max-model-len", str(args.max_model_len), "--max-num-seqs", "64",
                          "--disable-log-requests", "--limit-concurrency", "1024"],
                         kv_cache_gib=2)
    url = server.url
    try:
        pids = {"api": server.proc.pid, "engine": server.engine_pids()[0]}
        filler = httpx.post(f"{url}/tokenize", json={"prompt": " the quick brown fox",
                                                     "add_special_tokens": False}).json()["tokens"]
        soak = Soak(url, args.max_model_len, filler)
        samples: list = []

        async def run() -> None:
            end = time.monotonic() + args.minutes * 60
            tasks = [soak.client(seed, end) for seed in range(args.clients)]
            await asyncio.gather(_sample_rss(pids, end, 5.0, samples), *tasks)

        started = time.time()
        asyncio.run(run())
        settle = time.monotonic() + 30
        while (server.metric("vllm:num_requests_running") or
               server.metric("vllm:kv_cache_usage_perc")) and time.monotonic() < settle:
            time.sleep(0.2)
        after = {"running": server.metric("vllm:num_requests_running"),
                 "waiting": server.metric("vllm:num_requests_waiting"),
                 "kv_cache_usage": server.metric("vllm:kv_cache_usage_perc"),
                 "health": httpx.get(f"{url}/health").status_code}
    finally:
        server.stop()

    warm = [s for s in samples if s[0] >= args.warmup_minutes * 60]
    report = {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
              "clients": args.clients, "minutes": args.minutes,
              "warmup_minutes": args.warmup_minutes,
              "max_model_len": args.max_model_len, "requests": dict(soak.counts),
              "total_requests": sum(soak.counts.values()), "lost": len(soak.lost),
              "lost_examples": soak.lost[:10], "after": after,
              "median_latency_s": {k: round(sorted(v)[len(v) // 2], 2)
                                   for k, v in soak.latency.items() if v},
              "rss_mb": {}}
    for name in pids:
        series = [s[1][name] for s in warm] or [s[1][name] for s in samples]
        first, last, peak = series[0], series[-1], max(series)
        report["rss_mb"][name] = {"after_warmup": first, "end": last, "peak": peak,
                                  "growth_pct": round(100 * (last - first) / first, 2)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        with open(args.out.replace(".json", "-rss.json"), "w") as f:
            json.dump(samples, f)
    ok = (not soak.lost and after["running"] == 0 and after["kv_cache_usage"] == 0
          and all(abs(r["growth_pct"]) <= 5 for r in report["rss_mb"].values()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
