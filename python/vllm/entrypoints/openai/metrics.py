"""/metrics in Prometheus text format, with vLLM's metric names: queue
sizes and KV-cache usage read from the engine core at scrape time, token and
request counters, and TTFT / TPOT / end-to-end latency histograms."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)


class _Counters:
    """Counters whose totals live in the engine's stats (collected, not incremented)."""

    def __init__(self, metrics: "ServerMetrics") -> None:
        self.metrics = metrics

    def collect(self):
        m, stats = self.metrics, self.metrics.engine.stats
        labels = [m.model_name]
        for name, doc, value in (
                ("vllm:prompt_tokens", "Prompt tokens processed.", stats.prompt_tokens),
                ("vllm:generation_tokens", "Generated tokens.", stats.generation_tokens),
                ("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                 m.core_stats.prefix_cache_queries if m.core_stats else 0),
                ("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                 m.core_stats.prefix_cache_hits if m.core_stats else 0),
                ("vllm:num_preemptions", "Requests preempted (recomputed later).",
                 m.core_stats.num_preemptions if m.core_stats else 0)):
            family = CounterMetricFamily(name, doc, labels=["model_name"])
            family.add_metric(labels, value)
            yield family
        success = CounterMetricFamily("vllm:request_success", "Finished requests by reason.",
                                      labels=["model_name", "finished_reason"])
        for reason, count in sorted(stats.finished.items()):
            success.add_metric([m.model_name, reason], count)
        yield success


class ServerMetrics:
    def __init__(self, engine, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name
        self.core_stats = None
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        self.running = Gauge("vllm:num_requests_running", "Requests in the running batch.",
                             labels, registry=self.registry)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.",
                             labels, registry=self.registry)
        self.kv_usage = Gauge("vllm:kv_cache_usage_perc",
                              "Fraction of KV-cache blocks in use (1 = full).", labels,
                              registry=self.registry)
        self.gpu_kv_usage = Gauge("vllm:gpu_cache_usage_perc",
                                  "Same as vllm:kv_cache_usage_perc (older name).", labels,
                                  registry=self.registry)
        self.hit_rate = Gauge("vllm:prefix_cache_hit_rate",
                              "Prefix-cache hits / queries since start.", labels,
                              registry=self.registry)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.",
                              labels, buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.tpot = Histogram("vllm:time_per_output_token_seconds",
                              "Time per output token after the first.", labels,
                              buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end request latency.",
                             labels, buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_Counters(self))

    async def render(self) -> bytes:
        self.core_stats = await self.engine.get_stats()
        s, label = self.core_stats, self.model_name
        self.running.labels(label).set(s.num_running_reqs)
        self.waiting.labels(label).set(s.num_waiting_reqs)
        self.kv_usage.labels(label).set(s.kv_cache_usage)
        self.gpu_kv_usage.labels(label).set(s.kv_cache_usage)
        self.hit_rate.labels(label).set(s.prefix_cache_hit_rate)
        stats = self.engine.stats
        for samples, histogram in ((stats.ttft, self.ttft), (stats.tpot, self.tpot),
                                   (stats.e2e, self.e2e)):
            while samples:
                histogram.labels(label).observe(samples.pop())
        return generate_latest(self.registry)
