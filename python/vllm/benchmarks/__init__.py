"""`vllm bench throughput | latency | serve`: the benchmarks vLLM users know."""
