"""Which attention backend runs: VLLM_ATTENTION_BACKEND, or the default for
the device. An unknown or unavailable choice is an error that lists the
choices."""
from __future__ import annotations

from vllm import envs
from vllm.attention.backends.paged import PagedAttentionBackend
from vllm.attention.backends.torch_sdpa import TorchSDPABackend
from vllm.attention.backends.triton_attn import TritonAttentionBackend
from vllm.attention.backends.triton_mla import TritonMLABackend

_CPU_BACKENDS = {b.name: b for b in (PagedAttentionBackend, TorchSDPABackend,
                                     TritonAttentionBackend, TritonMLABackend)}
# Known to vLLM users but not runnable by this CPU engine (GPU-only kernels).
_GPU_ONLY = ("FLASH_ATTN", "FLASHINFER", "XFORMERS", "ROCM_FLASH", "FLASHMLA")


def get_attn_backend(name: str | None = None, device: str = "cpu"):
    choice = name if name is not None else envs.VLLM_ATTENTION_BACKEND
    if choice is None or choice == "":
        return PagedAttentionBackend
    key = choice.strip().upper()
    if key in _CPU_BACKENDS:
        backend = _CPU_BACKENDS[key]
        backend.check_usable(device)
        return backend
    available = ", ".join(_CPU_BACKENDS)
    if key in _GPU_ONLY and device == "cpu":
        raise ValueError(f"attention backend {choice!r} needs a GPU; on {device} choose "
                         f"one of: {available}")
    if key in _GPU_ONLY:
        raise ValueError(f"attention backend {choice!r} is not wired into this engine yet; "
                         f"on {device} choose one of: {available}")
    raise ValueError(f"unknown attention backend {choice!r} (VLLM_ATTENTION_BACKEND); "
                     f"choose one of: {available}")
