"""Command-line flags of `vllm serve` (vLLM's names)."""
from __future__ import annotations

import argparse

from vllm.engine.arg_utils import EngineArgs
from vllm.platforms import DEVICES


def add_serve_args(parser: argparse.ArgumentParser, model_positional: bool) -> None:
    if model_positional:
        parser.add_argument("model_tag", nargs="?", default=None,
                            help="model folder, .gguf file or cached id (default: the "
                                 "embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--model", default=None, help="same as the positional MODEL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", action="append", default=None,
                        help="require 'Authorization: Bearer KEY' on /v1 routes; repeat the "
                             "flag or give a comma list for several valid keys (default: "
                             "VLLM_API_KEY, also a comma list)")
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--dtype", default="auto",
                        choices=["auto", "float32", "float", "bfloat16", "float16", "half"])
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=128)
    parser.add_argument("--max-num-batched-tokens", type=int, default=None)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction,
                        default=True)
    parser.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction,
                        default=True)
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--quantization", "-q", default=None,
                        help="method of quantized weights (vLLM's names: gguf, awq, gptq, "
                             "...); default: what the checkpoint says; 'none' loads a GGUF "
                             "file dequantized to --dtype")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generation-config", default="auto",
                        help="default sampling parameters for requests that leave them "
                             "unset: 'auto' (the model's recommendation), 'vllm' (none), "
                             "or a folder with a generation_config.json")
    parser.add_argument("--chat-template", default=None,
                        help="a Jinja template, or a file holding one")
    parser.add_argument("--disable-log-requests", action="store_true")
    parser.add_argument("--disable-log-stats", action="store_true")
    parser.add_argument("--max-request-body-bytes", type=int, default=16 << 20,
                        help="larger request bodies are refused with 413")
    parser.add_argument("--trust-request-chat-template", action="store_true",
                        help="accept a chat_template in requests (refused by default: a "
                             "request's own template runs in the server)")
    parser.add_argument("--max-logprobs", type=int, default=20,
                        help="most logprobs / top_logprobs a request may ask for")
    parser.add_argument("--timeout-keep-alive", type=float, default=5,
                        help="seconds an idle keep-alive connection stays open")
    parser.add_argument("--timeout-header", type=float, default=10,
                        help="seconds a client has to send a request's headers")
    parser.add_argument("--timeout-request-body", type=float, default=60,
                        help="seconds a client has to send a request's body")
    parser.add_argument("--limit-concurrency", type=int, default=512,
                        help="most open connections and requests; more get 503")
    parser.add_argument("--uvicorn-log-level", default="warning",
                        choices=["debug", "info", "warning", "error", "critical"])
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--data-parallel-size", "-dp", type=int, default=1,
                        help="engine replicas behind this server, each with its own model "
                             "copy, KV cache (VLLM_CPU_KVCACHE_SPACE each) and share of the "
                             "CPUs; requests go to the least loaded")
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1,
                        help="worker processes per engine replica, each holding a slice of "
                             "every weight (dense Llama-family models)")
    parser.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1,
                        help="pipeline stages per engine replica, each holding a contiguous "
                             "run of the layers (VLLM_PP_LAYER_PARTITION says how many); "
                             "the stages work on different micro-batches at once")
    parser.add_argument("--distributed-executor-backend", choices=["mp", "ray", "uni"],
                        default=None,
                        help="how ranks beyond the first run: worker processes ('mp', the "
                             "default) or Ray actors ('ray': this machine's Ray instance, or "
                             "the cluster RAY_ADDRESS names)")
    parser.add_argument("--device", default="auto", choices=list(DEVICES),
                        help="where the engine runs: 'auto' (this build's device), 'cpu' "
                             "or 'cuda'")
    # GPU knobs of vLLM's command line: validated, unused by the CPU engine.
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                        help="share of the GPU's memory the engine may use, in (0, 1]")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="no CUDA graphs (the CPU engine has none)")
    parser.add_argument("--swap-space", type=float, default=4,
                        help="host GiB for preempted requests' blocks on GPUs (the CPU engine "
                             "recomputes preempted requests instead)")


def engine_args_from(args: argparse.Namespace) -> EngineArgs:
    model = getattr(args, "model_tag", None) or args.model
    return EngineArgs(
        model=model, tokenizer=args.tokenizer, revision=args.revision, dtype=args.dtype,
        max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, block_size=args.block_size,
        enable_prefix_caching=args.enable_prefix_caching,
        enable_chunked_prefill=args.enable_chunked_prefill, load_format=args.load_format,
        quantization=args.quantization, max_logprobs=args.max_logprobs,
        data_parallel_size=args.data_parallel_size,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        distributed_executor_backend=args.distributed_executor_backend,
        seed=args.seed, generation_config=args.generation_config, device=args.device,
        gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.enforce_eager,
        swap_space=args.swap_space,
        served_model_name=args.served_model_name[0] if args.served_model_name else None)
