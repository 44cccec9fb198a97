"""vLLM-compatible inference engine with its own compiled kernels."""
from vllm._build_record import build_info, check_torch_matches

# Before anything loads a compiled module: a torch other than the one the
# kernels were built against must fail here, naming both versions.
check_torch_matches()

# torch first: the compiled modules have no RUNPATH to libtorch and rely on
# torch having loaded it (import vllm._C must work on its own).
import torch  # noqa: E402,F401

from vllm import envs as _envs  # noqa: E402

__version__: str = build_info().get("version") or "0.0.0+unbuilt"

_envs.warn_unknown_vllm_variables()

__all__ = ["__version__", "build_info"]
