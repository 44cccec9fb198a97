"""Every environment variable vLLM reads, typed and validated, in one place.

This module is the only reader of ``os.environ`` in the project. Each variable
is declared once below with its default, its parsing (the one vLLM's reference
``envs.py`` gives) and when it is read:

* ``build``: read by the build (``cmake/build_env.py`` loads this file by path);
* ``live``: read afresh on every attribute access (``vllm.envs.VLLM_PORT``).

Bad values raise ``ValueError`` naming the variable and what it accepts. The
module imports nothing beyond the standard library, so the build can load it
without torch or the rest of the package.
"""
from __future__ import annotations

import difflib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

_TRUE_FALSE_WORDS = "true/false"


@dataclass(frozen=True)
class EnvVar:
    name: str
    parse: Callable[[str], Any]  # raw string -> value; raises ValueError
    default: Callable[[], Any]  # value when the variable is unset
    doc: str
    accepted: str  # human-readable description of accepted values
    phase: str = "live"  # "build" or "live"


class EnvVarError(ValueError):
    """A variable holds a value its parser refuses."""


# ---------------------------------------------------------------- parsers
# Each parser mirrors the reference's expression and raises ValueError with a
# short reason; _read() turns that into a message that names the variable.


def _as_int(raw: str) -> int:
    return int(raw.strip())


def _as_float(raw: str) -> float:
    return float(raw.strip())


def _bool_from_int(raw: str) -> bool:
    # reference: bool(int(os.getenv(NAME, default)))
    return bool(int(raw.strip()))


def _in_words(*words: str) -> Callable[[str], bool]:
    # reference: os.environ.get(NAME, default).strip().lower() in words
    return lambda raw: raw.strip().lower() in words


def _equals(word: str) -> Callable[[str], bool]:
    return lambda raw: raw == word


def _choice(*choices: str, lower: bool = True) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower() if lower else raw.strip()
        if value not in choices:
            raise ValueError("unknown value")
        return value

    return parse


def _positive_int(raw: str) -> int:
    value = int(raw.strip())
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw.strip())
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _port(raw: str) -> int:
    text = raw.strip()
    if "://" in text:
        # Kubernetes injects VLLM_PORT=tcp://IP:PORT for a Service named
        # "vllm"; say so instead of failing on int().
        raise ValueError(
            "looks like a URI, not a port number; Kubernetes sets "
            "VLLM_PORT=tcp://<ip>:<port> for a Service named 'vllm': rename "
            "the Service or set VLLM_PORT to a plain port number")
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("port must be between 0 and 65535")
    return value


def _comma_list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _expanded_path(raw: str) -> str:
    return os.path.expanduser(raw)


def _absolute_path(raw: str) -> str:
    return os.path.abspath(os.path.expanduser(raw))


def _maybe_int(raw: str) -> Optional[int]:
    return None if raw == "" else int(raw)


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("not a logging level")
    return level


def _non_empty_is_true(raw: str) -> bool:
    # reference: bool(os.getenv(NAME, 0)) -- any non-empty string is true,
    # including "0".
    return bool(raw)


def _build_type(raw: str) -> str:
    if raw not in ("Debug", "Release", "RelWithDebInfo"):
        raise ValueError("not a build type")
    return raw


def _precompiled_flag(raw: str) -> bool:
    # The reference takes any non-empty value as "on"; ours treats the usual
    # spellings of "off" as off (the build issue asks for that).
    return raw.strip().lower() not in ("", "0", "false", "no", "off")


def _cpu_kvcache_space(raw: str) -> int:
    value = int(raw.strip())
    if value < 0:
        raise ValueError("GiB of KV cache must be 0 (meaning 4) or more")
    return value


# ---------------------------------------------------------------- defaults


def _default_config_root() -> str:
    return os.getenv("XDG_CONFIG_HOME", os.path.join("~", ".config"))


def _default_cache_root() -> str:
    return os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


def _under_cache_root(*parts: str) -> Callable[[], str]:
    return lambda: os.path.expanduser(os.path.join(_default_cache_root(), *parts))


TARGET_DEVICES = ("cuda", "rocm", "cpu", "neuron", "openvino", "tpu", "xpu",
                  "hpu")
KERNEL_DEVICES = ("cuda", "rocm", "cpu")

INT = "an integer"
BOOL01 = "0 or 1"
FLOAT = "a number"
ANY = "any string"
PATH = "a path"

_REGISTRY: list[EnvVar] = []


def _var(name: str, parse: Callable[[str], Any], default: Any, accepted: str,
         doc: str, phase: str = "live") -> None:
    default_fn = default if callable(default) else _const(default)
    _REGISTRY.append(EnvVar(name, parse, default_fn, doc, accepted, phase))


def _str(raw: str) -> str:
    return raw


# ================== Installation time ==================
_var("VLLM_TARGET_DEVICE", _choice(*TARGET_DEVICES), "cuda",
     " | ".join(TARGET_DEVICES),
     "Device to build for. When unset the build detects it from the installed "
     "torch (CUDA torch + nvcc -> cuda, HIP torch -> rocm, else cpu); the "
     "reference default 'cuda' is what this attribute reports.", "build")
_var("MAX_JOBS", _positive_int, None, "an integer >= 1",
     "Parallel compile jobs; default: the CPUs this process may use.", "build")
_var("NVCC_THREADS", _positive_int, None, "an integer >= 1",
     "nvcc --threads; compile jobs become MAX_JOBS // NVCC_THREADS (>= 1). "
     "Unset means 1.", "build")
_var("VLLM_USE_PRECOMPILED", _precompiled_flag,
     lambda: bool(os.environ.get("VLLM_PRECOMPILED_WHEEL_LOCATION")),
     "empty/0/false/no/off = off, anything else = on",
     "Reuse the compiled modules of a wheel this project built "
     "(VLLM_PRECOMPILED_WHEEL_LOCATION) instead of compiling. Unset: on when "
     "VLLM_PRECOMPILED_WHEEL_LOCATION is set.", "build")
_var("VLLM_PRECOMPILED_WHEEL_LOCATION", _expanded_path, None, PATH,
     "Path of the wheel whose compiled modules VLLM_USE_PRECOMPILED reuses.",
     "build")
_var("CMAKE_BUILD_TYPE", _build_type, None, "Debug | Release | RelWithDebInfo",
     "CMake build type; unset means RelWithDebInfo.", "build")
_var("VERBOSE", _bool_from_int, False, BOOL01,
     "1 prints full compiler command lines in the build log.", "build")
_var("TORCH_CUDA_ARCH_LIST", _str, None,
     "archs separated by ';' or spaces, e.g. '8.0 9.0a'",
     "CUDA archs to compile (torch's variable); unset means the project "
     "default list.", "build")
_var("PYTORCH_ROCM_ARCH", _str, None, "gfx archs separated by ';', e.g. gfx90a;gfx942",
     "ROCm archs to compile (torch's variable); unset means gfx90a;gfx942.",
     "build")
_var("VLLM_CUTLASS_SRC_DIR", _expanded_path, None, PATH,
     "Local CUTLASS checkout whose include/ the CUDA build uses instead of "
     "the nvidia-cutlass wheel's headers.", "build")
_var("VLLM_CONFIG_ROOT", _expanded_path,
     lambda: os.path.expanduser(os.path.join(_default_config_root(), "vllm")),
     PATH,
     "Root of vLLM's configuration files; default ~/.config/vllm, or "
     "$XDG_CONFIG_HOME/vllm when XDG_CONFIG_HOME is set.")

# ================== Runtime ==================
_var("VLLM_CACHE_ROOT", _expanded_path, _under_cache_root("vllm"), PATH,
     "Root of vLLM's cache files; default ~/.cache/vllm, or "
     "$XDG_CACHE_HOME/vllm.")
_var("VLLM_HOST_IP", _str, "", ANY,
     "IP of this node for internal communication (never the API server's).")
_var("VLLM_PORT", _port, None, "a port number 0-65535",
     "First internal communication port (never the API server's); further "
     "ports increment from it.")
_var("VLLM_RPC_BASE_PATH", _str, lambda: tempfile.gettempdir(), PATH,
     "Where each server makes its private (0700) directory for the IPC sockets between API "
     "server and engine process.")
_var("VLLM_USE_MODELSCOPE", _in_words("true"), False, _TRUE_FALSE_WORDS,
     "Resolve model ids from ModelScope instead of Hugging Face ('true', not "
     "a number).")
_var("VLLM_RINGBUFFER_WARNING_INTERVAL", _as_int, 60, INT,
     "Seconds between warnings while the ring buffer is full.")
_var("CUDA_HOME", _str, None, PATH, "CUDA toolkit root (bin, include, lib).")
_var("VLLM_NCCL_SO_PATH", _str, None, PATH, "Path of the NCCL library.")
_var("LD_LIBRARY_PATH", _str, None, ANY,
     "Searched for NCCL when VLLM_NCCL_SO_PATH is unset.")
_var("VLLM_USE_TRITON_FLASH_ATTN", _in_words("true", "1"), True,
     "true/1 = on, else off", "Use Triton flash attention (ROCm).")
_var("VLLM_FLASH_ATTN_VERSION", _maybe_int, None, "2 or 3",
     "Force a flash-attention version.")
_var("VLLM_TEST_DYNAMO_FULLGRAPH_CAPTURE", lambda raw: raw != "0", True,
     "0 = off, else on", "Internal: Dynamo fullgraph capture.")
_var("LOCAL_RANK", _as_int, 0, INT, "Local rank of this process.")
_var("CUDA_VISIBLE_DEVICES", _str, None, ANY, "Visible CUDA devices.")
_var("VLLM_ENGINE_ITERATION_TIMEOUT_S", _as_int, 60, INT,
     "Seconds one engine step may take before the engine counts as dead.")
_var("VLLM_API_KEY", _str, None, ANY,
     "API key the OpenAI-compatible server requires as a Bearer token.")
_var("S3_ACCESS_KEY_ID", _str, None, ANY, "S3 access key (tensorizer).")
_var("S3_SECRET_ACCESS_KEY", _str, None, ANY, "S3 secret key (tensorizer).")
_var("S3_ENDPOINT_URL", _str, None, ANY, "S3 endpoint (tensorizer).")
_var("VLLM_USAGE_STATS_SERVER", _str, "https://stats.vllm.ai", "a URL",
     "Where usage statistics are sent.")
_var("VLLM_NO_USAGE_STATS", _equals("1"), False, "1 = on",
     "1 turns usage statistics off.")
_var("VLLM_DO_NOT_TRACK",
     # reference: (VLLM_DO_NOT_TRACK or DO_NOT_TRACK or "0") == "1"
     lambda raw: (raw or os.environ.get("DO_NOT_TRACK") or "0") == "1",
     lambda: os.environ.get("DO_NOT_TRACK") == "1", "1 = on",
     "1 (or DO_NOT_TRACK=1) turns usage statistics off.")
_var("DO_NOT_TRACK", _equals("1"), False, "1 = on",
     "The cross-tool opt-out; read through VLLM_DO_NOT_TRACK.")
_var("VLLM_USAGE_SOURCE", _str, "production", ANY,
     "Tag recorded with usage statistics.")
_var("VLLM_CONFIGURE_LOGGING", _as_int, 1, INT,
     "0 leaves Python logging alone; 1 configures it.")
_var("VLLM_LOGGING_CONFIG_PATH", _str, None, PATH,
     "JSON dictConfig file for logging.")
_var("VLLM_LOGGING_LEVEL", _log_level, "INFO",
     "DEBUG | INFO | WARNING | ERROR | CRITICAL", "Default logging level.")
_var("VLLM_LOGGING_PREFIX", _str, "", ANY, "Prefix of every log line.")
_var("VLLM_LOGITS_PROCESSOR_THREADS", _as_int, None, INT,
     "Run logits processors in a thread pool of this size.")
_var("VLLM_TRACE_FUNCTION", _as_int, 0, INT,
     "1 writes a per-process function-call trace (slow).")
_var("VLLM_ATTENTION_BACKEND", _str, None, "a backend name",
     "Attention backend to use instead of the default.")
_var("TRITON_INTERPRET", _equals("1"), False, "1 = on",
     "Triton's own switch (read by Triton at import): run Triton kernels in its "
     "interpreter; the TRITON_ATTN backend needs it on CPU.")
_var("VLLM_USE_FLASHINFER_SAMPLER", _bool_from_int, None, BOOL01,
     "Use flashinfer's sampler. GPU engine: 1 without the flashinfer package is an "
     "error; with it, sampling stays on torch for now (logged).")
_var("VLLM_FLASHINFER_FORCE_TENSOR_CORES", _bool_from_int, False, BOOL01,
     "Force flashinfer to use tensor cores.")
_var("VLLM_PP_LAYER_PARTITION", _str, None, "comma-separated layer counts",
     "Decoder layers per pipeline stage, e.g. '3,1' (one positive count per stage, "
     "summing to the model's layers; checked before any worker starts). Unset: an even "
     "split, the remainder to the stages before the last (vLLM's rule).")
_var("VLLM_CPU_KVCACHE_SPACE", _cpu_kvcache_space, 0, "an integer >= 0",
     "CPU KV cache size in GiB; 0 means 4 GiB.")
_var("VLLM_CPU_OMP_THREADS_BIND", _str, "all", "'all' or core ids like 0-31",
     "CPU cores the OpenMP threads are bound to; ranks separated by '|'.")
_var("VLLM_OPENVINO_DEVICE", lambda raw: raw.upper(), "CPU", ANY,
     "OpenVINO device.")
_var("VLLM_OPENVINO_KVCACHE_SPACE", _as_int, 0, INT,
     "OpenVINO KV cache GiB; 0 means 4.")
_var("VLLM_OPENVINO_CPU_KV_CACHE_PRECISION", _str, None, "bf16 | f16 | u8",
     "OpenVINO KV cache precision.")
_var("VLLM_OPENVINO_ENABLE_QUANTIZED_WEIGHTS", _in_words("on", "true", "1"),
     False, "on/true/1 = on", "Compress weights during OpenVINO export.")
_var("VLLM_USE_RAY_SPMD_WORKER", _bool_from_int, False, BOOL01,
     "With distributed_executor_backend='ray': every rank a Ray actor, rank 0 too (the "
     "engine core only schedules).")
_var("VLLM_USE_RAY_COMPILED_DAG", _bool_from_int, False, BOOL01,
     "With the Ray backend and VLLM_USE_RAY_SPMD_WORKER=1: each step goes through a Ray "
     "compiled graph (shared-memory channels, no per-call task submission).")
_var("VLLM_USE_RAY_COMPILED_DAG_NCCL_CHANNEL", _bool_from_int, True, BOOL01,
     "NCCL channels in Ray's compiled graph (GPU workers; ignored without "
     "VLLM_USE_RAY_COMPILED_DAG; set explicitly to 1 for CPU workers: an error).")
_var("VLLM_USE_RAY_COMPILED_DAG_OVERLAP_COMM", _bool_from_int, False, BOOL01,
     "Overlap GPU communication in Ray's compiled graph (GPU workers; 1 with CPU "
     "workers: an error).")
_var("VLLM_WORKER_MULTIPROC_METHOD", _choice("fork", "spawn"), "fork",
     "fork | spawn", "Start method of worker processes.")
_var("VLLM_ASSETS_CACHE", _expanded_path,
     _under_cache_root("vllm", "assets"), PATH, "Cache of downloaded assets.")
_var("VLLM_IMAGE_FETCH_TIMEOUT", _as_int, 5, INT, "Image fetch timeout (s).")
_var("VLLM_VIDEO_FETCH_TIMEOUT", _as_int, 30, INT, "Video fetch timeout (s).")
_var("VLLM_AUDIO_FETCH_TIMEOUT", _as_int, 10, INT, "Audio fetch timeout (s).")
_var("VLLM_MM_INPUT_CACHE_SIZE", _as_int, 256, INT,
     "Multimodal input cache size in items.")
_var("VLLM_XLA_CACHE_PATH", _expanded_path,
     _under_cache_root("vllm", "xla_cache"), PATH, "XLA persistent cache.")
_var("VLLM_FUSED_MOE_CHUNK_SIZE", _as_int, 32768, INT,
     "Tokens per fused-MoE chunk.")
_var("VLLM_NO_DEPRECATION_WARNING", _bool_from_int, False, BOOL01,
     "1 silences deprecation warnings.")
_var("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH", _non_empty_is_true, False,
     "any non-empty value = on (as in the reference, even '0')",
     "Keep the API server up (answering errors) after the engine dies.")
_var("VLLM_ALLOW_LONG_MAX_MODEL_LEN", _in_words("1", "true"), False,
     "1/true = on", "Allow max_model_len above the model config's.")
_var("VLLM_TEST_FORCE_FP8_MARLIN", _in_words("1", "true"), False,
     "1/true = on", "Force FP8 Marlin regardless of hardware support.")
_var("VLLM_TEST_FORCE_LOAD_FORMAT", _str, "dummy", "a load format",
     "Load format forced in tests.")
_var("VLLM_RPC_TIMEOUT", _as_int, 10000, INT,
     "Milliseconds to wait for the engine's answer to a control call.")
_var("VLLM_PLUGINS", _comma_list, None, "comma-separated plugin names",
     "Plugins to load: unset loads all, empty loads none.")
_var("VLLM_TORCH_PROFILER_DIR", _absolute_path, None, PATH,
     "Directory torch profiler traces are written to (~ expanded, made "
     "absolute).")
_var("VLLM_USE_TRITON_AWQ", _bool_from_int, False, BOOL01,
     "Use the Triton AWQ kernels: the awq_gemm and awq_dequantize ops run "
     "vllm/triton_ops/awq.py (on CPU only under TRITON_INTERPRET=1; the CPU "
     "engine's AWQ layers always run our quant_linear kernel).")
_var("VLLM_ALLOW_RUNTIME_LORA_UPDATING", _in_words("1", "true"), False,
     "1/true = on", "Allow loading/unloading LoRA adapters at run time.")
_var("VLLM_SKIP_P2P_CHECK", _equals("1"), False, "1 = on",
     "Trust the driver's peer-to-peer capability report.")
_var("VLLM_DISABLED_KERNELS", _comma_list, lambda: [], "comma-separated names",
     "Quantization kernels to disable, by vLLM's class names; the next one is "
     "chosen. On CPU: CPUWNA16LinearKernel (our quant_linear serving AWQ/GPTQ "
     "layers; disabled, they are dequantized at load).")
_var("VLLM_USE_V1", _bool_from_int, False, BOOL01, "Use the V1 code path.")
_var("VLLM_ROCM_FP8_PADDING", _bool_from_int, True, BOOL01,
     "Pad fp8 weights to 256 bytes on ROCm.")
_var("K_SCALE_CONSTANT", _as_int, 200, INT,
     "Divisor of the dynamic FP8 key scale.")
_var("V_SCALE_CONSTANT", _as_int, 100, INT,
     "Divisor of the dynamic FP8 value scale.")
_var("VLLM_ENABLE_V1_MULTIPROCESSING", _bool_from_int, True, BOOL01,
     "Run the engine core in its own process.")
_var("VLLM_LOG_BATCHSIZE_INTERVAL", _as_float, -1.0, FLOAT,
     "> 0: log the batch-size distribution every this many seconds.")
_var("VLLM_DISABLE_COMPILE_CACHE", _bool_from_int, False, BOOL01,
     "Disable the compile cache.")
_var("VLLM_SERVER_DEV_MODE", _bool_from_int, False, BOOL01,
     "Enable development routes such as /reset_prefix_cache.")
_var("VLLM_V1_OUTPUT_PROC_CHUNK_SIZE", _as_int, 128, INT,
     "Requests handled per asyncio task when processing outputs.")
_var("VLLM_MLA_DISABLE", _bool_from_int, False, BOOL01,
     "1: MLA models (DeepSeek-V2/V3) keep a per-head KV cache and run the "
     "ordinary attention kernels instead of MLA's latent cache (same outputs; "
     "for comparison and debugging).")
_var("VLLM_MLA_PERFORM_MATRIX_ABSORPTION", _bool_from_int, True, BOOL01,
     "MLA: fold W_UK into the query and apply W_UV after attention, so "
     "attention runs over the cached latents (default); 0 up-projects the "
     "latents to per-head keys and values every step instead (PyTorch; slow).")
_var("VLLM_MLA_DISABLE_REQUANTIZATION", _bool_from_int, False, BOOL01,
     "No effect here: this engine has no fp8 weights, so absorbed MLA "
     "matrices are never requantized; they stay in the model dtype.")
_var("VLLM_ENABLE_MOE_ALIGN_BLOCK_SIZE_TRITON", _bool_from_int, False, BOOL01,
     "Use the Triton moe_align_block_size.")
_var("VLLM_RAY_PER_WORKER_GPUS", _as_float, 1.0, FLOAT,
     "GPUs per Ray worker (fractions allowed); CPU workers take none (logged as unused).")
_var("VLLM_RAY_BUNDLE_INDICES", _str, "", "comma-separated integers",
     "Placement-group bundle of each rank, e.g. '0,1' (one distinct index per rank; "
     "default: rank r in bundle r).")
_var("VLLM_CUDA_MEM_ALIGN_KV_CACHE", _bool_from_int, True, BOOL01,
     "Align KV cache entries to 256 bytes on NVIDIA GPUs.")
_var("VLLM_CUDART_SO_PATH", _str, None, PATH, "Path of libcudart.")
_var("VLLM_CONTIGUOUS_PA", _in_words("1", "true"), True, "1/true = on",
     "Contiguous paged-attention cache fetch (Gaudi).")
_var("VLLM_DP_RANK", _as_int, 0, INT,
     "Data-parallel rank of this process when an external launcher starts one replica per "
     "process (data_parallel_size 1): its threads take this rank's share of the CPUs.")
_var("VLLM_DP_SIZE", _as_int, 1, INT,
     "Data-parallel world size under an external launcher (data_parallel_size 1).")
_var("VLLM_DP_MASTER_IP", _str, "", ANY,
     "Data-parallel master IP; replicas here exchange no data, so nothing uses it.")
_var("VLLM_DP_MASTER_PORT", _as_int, 0, INT,
     "Data-parallel master port; replicas here exchange no data, so nothing uses it.")
_var("VLLM_CI_USE_S3", _equals("1"), False, "1 = on",
     "Load models from S3 in CI (RunAI streamer).")

# ================== This project's own ==================
_var("VLLM_CPU_ISA", _choice("auto", "avx512", "avx2", "scalar"), "auto",
     "auto | avx512 | avx2 | scalar",
     "CPU kernel variant to run; auto picks the best the CPU supports. A "
     "variant the CPU lacks is refused at import.")
_var("VLLM_PLUGINS_FAIL_ON_ERROR", _bool_from_int, False, BOOL01,
     "1 makes a general plugin that raises at start-up fatal; by default it is "
     "logged and skipped.")
_var("MODELSCOPE_CACHE", _expanded_path, None, PATH,
     "ModelScope's cache root; with VLLM_USE_MODELSCOPE=True model ids are "
     "looked up under its hub/ folder (unset: ~/.cache/modelscope).")

environment_variables: dict[str, EnvVar] = {v.name: v for v in _REGISTRY}


def _read(var: EnvVar) -> Any:
    raw = os.environ.get(var.name)
    if raw is None:
        return var.default()
    try:
        return var.parse(raw)
    except ValueError as exc:
        reason = str(exc)
        if reason.startswith("invalid literal") or "could not convert" in reason:
            reason = "not a valid value"
        raise EnvVarError(f"{var.name}={raw!r} is invalid ({reason}); "
                          f"accepted: {var.accepted}") from None


def is_set(name: str) -> bool:
    return name in os.environ


def __getattr__(name: str) -> Any:
    var = environment_variables.get(name)
    if var is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _read(var)


def __dir__() -> list[str]:
    return list(environment_variables)


def raw_value(name: str) -> Optional[str]:
    """The unparsed string, for the rare caller that must pass it on as is."""
    return os.environ.get(name)


def unknown_vllm_variables() -> list[tuple[str, Optional[str]]]:
    """(name, closest known name or None) for each unknown VLLM_* variable."""
    known = [n for n in environment_variables if n.startswith("VLLM_")]
    found = []
    for name in sorted(os.environ):
        if name.startswith("VLLM_") and name not in environment_variables:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            found.append((name, close[0] if close else None))
    return found


def warn_unknown_vllm_variables() -> None:
    for name, close in unknown_vllm_variables():
        hint = f"; did you mean {close}?" if close else ""
        warnings.warn(f"Unknown vLLM environment variable {name}{hint}",
                      stacklevel=2)


def markdown_table() -> str:
    """The configuration table for the docs, generated from the registry."""
    lines = ["| Variable | When read | Default | Accepted | Meaning |",
             "|---|---|---|---|---|"]
    for var in _REGISTRY:
        cells = [f"`{var.name}`", var.phase, _describe_default(var),
                 var.accepted, var.doc]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells)
                     + " |")
    return "\n".join(lines) + "\n"


def _describe_default(var: EnvVar) -> str:
    path_defaults = {
        "VLLM_CONFIG_ROOT": "`~/.config/vllm`",
        "VLLM_CACHE_ROOT": "`~/.cache/vllm`",
        "VLLM_ASSETS_CACHE": "`~/.cache/vllm/assets`",
        "VLLM_XLA_CACHE_PATH": "`~/.cache/vllm/xla_cache`",
        "VLLM_RPC_BASE_PATH": "the temp dir",
        "VLLM_USE_PRECOMPILED": "on if a wheel location is set",
        "VLLM_DO_NOT_TRACK": "`DO_NOT_TRACK == '1'`",
    }
    if var.name in path_defaults:
        return path_defaults[var.name]
    value = var.default()
    return "unset" if value is None else f"`{value!r}`"


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown_table())
    else:
        for var in _REGISTRY:
            print(f"{var.name}={_read(var)!r}")
