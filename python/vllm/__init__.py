"""vLLM-compatible inference engine with its own compiled kernels."""
from vllm import _fork_safety  # first: notes whether torch was loaded before vllm
from vllm._build_record import build_info, check_torch_matches

# Before anything loads a compiled module: a torch other than the one the
# kernels were built against must fail here, naming both versions.
check_torch_matches()

# torch first: the compiled modules have no RUNPATH to libtorch and rely on
# torch having loaded it (import vllm._C must work on its own).
import torch  # noqa: E402,F401

_fork_safety.record_baseline()

from vllm import envs as _envs  # noqa: E402

__version__: str = build_info().get("version") or "0.0.0+unbuilt"

_envs.warn_unknown_vllm_variables()

# As vLLM does at import: configure the `vllm` loggers (or leave them alone
# with VLLM_CONFIGURE_LOGGING=0); a bad logging setting fails here, loudly.
from vllm.logger import init_logging as _init_logging  # noqa: E402

_init_logging()

if _envs.VLLM_TRACE_FUNCTION:
    from vllm.tracing import enable_function_trace as _enable_trace  # noqa: E402

    _enable_trace()

# The engine classes load on first use: `import vllm` (and `vllm --version`)
# stays light, and needs neither transformers nor a model.
_LAZY = {
    "LLM": "vllm.entrypoints.llm",
    "SamplingParams": "vllm.sampling_params",
    "RequestOutputKind": "vllm.sampling_params",
    "RequestOutput": "vllm.outputs",
    "CompletionOutput": "vllm.outputs",
    "EngineArgs": "vllm.engine.arg_utils",
    "LLMEngine": "vllm.engine.llm_engine",
    "ModelRegistry": "vllm.model_executor.models",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vllm' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)


__all__ = ["__version__", "build_info", *_LAZY]
