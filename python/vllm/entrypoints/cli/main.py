"""The `vllm` command: serve, bench, generate, chat, collect-env, --version."""
from __future__ import annotations

import argparse
import json
import sys


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="folder, .gguf file or cached model id (default: the embedded "
                             "SmolLM2-135M-Instruct)")
    parser.add_argument("--dtype", default="auto",
                        choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--quantization", "-q", default=None,
                        help="as vllm serve's (a .gguf file: gguf unless 'none')")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=-1)
    parser.add_argument("--seed", type=int, default=None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm", description=__doc__)
    parser.add_argument("--version", action="store_true",
                        help="print the version (with --verbose: the build record)")
    parser.add_argument("--verbose", action="store_true",
                        help="with --version, print the build record too")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("collect-env", help="print the build record and the runtime")
    generate = sub.add_parser("generate", help="complete a prompt offline and print the text")
    generate.add_argument("prompt", nargs="+", help="prompt text (several: one each)")
    generate.add_argument("--chat", action="store_true",
                          help="wrap each prompt as a user message in the chat template")
    _add_engine_args(generate)
    serve = sub.add_parser("serve", help="start the OpenAI-compatible server")
    from vllm.entrypoints.openai.cli_args import add_serve_args
    add_serve_args(serve, model_positional=True)
    bench = sub.add_parser("bench", help="benchmarks: throughput, latency, serve")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    from vllm.benchmarks.offline import add_latency_args, add_throughput_args
    from vllm.benchmarks.serve import add_serve_bench_args
    add_throughput_args(bench_sub.add_parser("throughput", help="offline throughput"))
    add_latency_args(bench_sub.add_parser("latency", help="latency of one batch"))
    add_serve_bench_args(bench_sub.add_parser("serve", help="load an OpenAI-compatible server"))
    chat = sub.add_parser("chat", help="interactive chat in the terminal (offline)")
    chat.add_argument("--system", default=None, help="system prompt")
    _add_engine_args(chat)
    return parser


def _llm_and_params(args):
    from vllm import LLM, SamplingParams
    llm = LLM(model=args.model, dtype=args.dtype, max_model_len=args.max_model_len,
              quantization=args.quantization)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                            top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    return llm, params


def _generate(args) -> int:
    llm, params = _llm_and_params(args)
    if args.chat:
        outputs = llm.chat([[{"role": "user", "content": p}] for p in args.prompt], params,
                           use_tqdm=False)
    else:
        outputs = llm.generate(args.prompt, params, use_tqdm=False)
    for output in outputs:
        print(output.outputs[0].text)
    return 0


def _chat(args) -> int:
    llm, params = _llm_and_params(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            return 0
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.rstrip("\n")})
        reply = llm.chat(messages, params, use_tqdm=False)[0].outputs[0].text
        messages.append({"role": "assistant", "content": reply})
        print(reply, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except Exception as exc:
        # A bad model file or setting: one line, not a traceback. The engine
        # core's own failures arrive as EngineDeadError with its last line.
        from vllm.engine.core_client import EngineDeadError
        from vllm.transformers_utils.model_file_check import ModelFileError
        one_line = (ModelFileError, EngineDeadError)
        if args.command == "serve":  # e.g. the port in use
            from vllm.entrypoints.openai.api_server import ServerAddressError
            one_line += (ServerAddressError,)
        if not isinstance(exc, one_line):
            raise
        print(f"vllm {args.command}: error: {exc}", file=sys.stderr)
        return 1


def _run(args) -> int:
    if args.command == "collect-env":
        from vllm.collect_env import main as collect_env_main
        collect_env_main()
        return 0
    if args.command == "generate":
        return _generate(args)
    if args.command == "chat":
        return _chat(args)
    if args.command == "bench":
        from vllm.benchmarks import offline, serve as serve_bench
        run = {"throughput": offline.run_throughput, "latency": offline.run_latency,
               "serve": serve_bench.run_serve_bench}[args.bench_command]
        result = run(args)
        return 0 if result.get("failed", 0) == 0 else 1
    if args.command == "serve":
        import asyncio

        from vllm.entrypoints.openai.api_server import serve
        return asyncio.run(serve(args))
    if args.version:
        import vllm
        print(vllm.__version__)
        if args.verbose:
            print(json.dumps(vllm.build_info(), indent=2))
        return 0
    _parser().print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
