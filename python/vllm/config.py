"""The engine's configuration: one dataclass per concern, validated when
built; bad values raise ValueError with the reason."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from vllm import envs

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
           "float16": torch.float16, "half": torch.float16}
LOAD_FORMATS = ("auto", "safetensors", "pt", "gguf", "dummy")
_GIB = 1 << 30


def auto_dtype() -> tuple[torch.dtype, str]:
    """What dtype="auto" means on this CPU, and why (for the log).

    It follows the active CPU kernel variant (`VLLM_CPU_ISA` forces one, so
    a forced AVX2 run picks what a real AVX2 CPU would), whatever the
    checkpoint's own dtype, so GGUF files (none of their own) and
    safetensors checkpoints get the same: bf16
    wherever our packed bf16 GEMM runs (AVX512-BF16: native dot products;
    AVX2: bf16 weights widened to fp32 in registers), since it streams half
    the bytes of fp32 at the same FMA rate (AVX2, SmolLM2: 64 x 128 output
    tokens 187 vs 128 tok/s, batch-1 decode 67 vs 14); elsewhere (scalar
    kernels, builds without CPU kernels) fp32, which torch computes far
    faster than bf16 there. An fp16 checkpoint is computed in bf16 (no fp16
    GEMM of ours; same width, wider range)."""
    from vllm import _custom_ops as ops

    isa = ops.cpu_isa() or "none"
    if ops.packed_linear_available():
        how = "native bf16 dot products" if isa == "avx512" else "bf16 weights widened to fp32 FMAs"
        return torch.bfloat16, (f"the {isa} kernels run bf16 linear layers ({how}), streaming "
                                f"half the bytes of fp32")
    return torch.float32, f"the {isa} CPU kernels have no bf16 GEMM; fp32 runs faster there"


def resolve_dtype(dtype: str | torch.dtype, config_dtype: torch.dtype | None) -> torch.dtype:
    """'auto': see auto_dtype (logged); an explicit dtype is taken as it is.
    fp16 is allowed but runs slower than bf16 on CPU."""
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype == "auto":
        resolved, why = auto_dtype()
        logger.info("dtype auto -> %s (checkpoint: %s): %s", str(resolved).replace("torch.", ""),
                    str(config_dtype).replace("torch.", "") if config_dtype else "no dtype", why)
        return resolved
    elif dtype in _DTYPES:
        resolved = _DTYPES[dtype]
    else:
        raise ValueError(f"dtype {dtype!r} is not one of auto, "
                         f"{', '.join(sorted(_DTYPES))}")
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype {resolved} is not supported (float32, bfloat16, float16)")
    return resolved


@dataclass
class ModelConfig:
    model: str  # what the user asked for; None/"" means the embedded default
    path: str  # resolved folder or .gguf file
    is_gguf: bool
    hf_config: Any  # transformers.PretrainedConfig
    dtype: torch.dtype
    max_model_len: int
    load_format: str = "auto"
    seed: int = 0
    tokenizer: str | None = None
    # the method quantized weights load with (vllm.model_executor.layers.
    # quantization.resolve_quantization), None for dense weights
    quantization: str | None = None
    served_model_name: str = ""
    # SamplingParams fields the model recommends, applied where a request
    # (or LLM.generate without SamplingParams) leaves them unset
    # (vllm.transformers_utils.generation_defaults)
    default_sampling: dict = field(default_factory=dict)
    # most logprobs a request may ask for, per position (vLLM's max_logprobs)
    max_logprobs: int = 20

    @property
    def architecture(self) -> str:
        archs = getattr(self.hf_config, "architectures", None) or []
        return archs[0] if archs else "unknown"

    @property
    def head_size(self) -> int:
        cfg = self.hf_config
        return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        cfg = self.hf_config
        return getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads

    @property
    def num_layers(self) -> int:
        return self.hf_config.num_hidden_layers

    @property
    def vocab_size(self) -> int:
        return self.hf_config.vocab_size


def derive_max_model_len(hf_config: Any, requested: int | None) -> int:
    """The context length: the config's unless the user asks for less (or,
    with VLLM_ALLOW_LONG_MAX_MODEL_LEN, more). Sliding-window models are
    capped at their window: the kernels attend over the whole context."""
    derived = getattr(hf_config, "max_position_embeddings", None) or 2048
    window = getattr(hf_config, "sliding_window", None)
    if window and getattr(hf_config, "use_sliding_window", True) and window < derived:
        logger.info("capping the context at the sliding window (%d tokens)", window)
        derived = window
    if requested is None:
        return derived
    if requested < 1:
        raise ValueError(f"max_model_len must be positive, got {requested}")
    if requested > derived and not envs.VLLM_ALLOW_LONG_MAX_MODEL_LEN:
        raise ValueError(
            f"max_model_len {requested} is larger than the model's maximum length "
            f"{derived}; set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 to allow it (outputs may "
            "be wrong past the trained length)")
    return requested


@dataclass
class CacheConfig:
    block_size: int = 32  # the CPU attention kernel reads 32-token blocks best
    cache_space_bytes: int = 4 * _GIB
    enable_prefix_caching: bool = True
    num_blocks_override: int | None = None  # tests: a tiny cache forces preemption
    num_blocks: int = 0  # decided by the worker from the space and the model

    def __post_init__(self) -> None:
        if self.block_size not in (8, 16, 32, 64, 128):
            raise ValueError(f"block_size must be 8, 16, 32, 64 or 128, got {self.block_size}")
        if self.num_blocks_override is not None and self.num_blocks_override < 1:
            raise ValueError("num_gpu_blocks_override must be at least 1")

    @staticmethod
    def space_from_env() -> int:
        gib = envs.VLLM_CPU_KVCACHE_SPACE  # refuses negative values
        if gib == 0:
            logger.info("VLLM_CPU_KVCACHE_SPACE is not set: using 4 GiB for the KV cache")
            gib = 4
        return gib * _GIB


@dataclass
class SchedulerConfig:
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 128
    max_model_len: int = 2048
    enable_chunked_prefill: bool = True

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be at least 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be at least 1, got "
                             f"{self.max_num_batched_tokens}")
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) is smaller than "
                f"max_model_len ({self.max_model_len}) without chunked prefill: long "
                "prompts could never be scheduled")


@dataclass
class ParallelConfig:
    """Data parallelism: data_parallel_size engine replicas, each a full copy
    of the model with its own KV cache and engine-core process; rank says
    which one this is (and which share of the CPUs its threads take).
    external: the replicas were started one per process by a launcher
    (VLLM_DP_SIZE / VLLM_DP_RANK), not by this front end."""
    data_parallel_size: int = 1
    data_parallel_rank: int = 0
    external: bool = False
    # ranks of each replica, each a worker process holding a slice of every
    # weight of its stage's layers (vllm.executor.multiproc_executor)
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    # how ranks beyond the first run: "mp" (worker processes, the default),
    # "ray" (Ray actors), "uni" (one process: a world of one rank only)
    distributed_executor_backend: str | None = None

    def __post_init__(self) -> None:
        backend = self.distributed_executor_backend
        if backend not in (None, "mp", "ray", "uni"):
            raise ValueError(f"distributed_executor_backend {backend!r} is not one of 'mp', "
                             "'ray', 'uni'")
        if backend == "uni" and self.tensor_parallel_size * self.pipeline_parallel_size > 1:
            raise ValueError("distributed_executor_backend 'uni' runs one rank; "
                             "tensor_parallel_size x pipeline_parallel_size is "
                             f"{self.tensor_parallel_size * self.pipeline_parallel_size}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be at least 1, got "
                             f"{self.tensor_parallel_size}")
        if self.pipeline_parallel_size < 1:
            raise ValueError(f"pipeline_parallel_size must be at least 1, got "
                             f"{self.pipeline_parallel_size}")
        if self.data_parallel_size < 1:
            raise ValueError(f"data_parallel_size must be at least 1, got "
                             f"{self.data_parallel_size}")
        if not 0 <= self.data_parallel_rank < self.data_parallel_size:
            raise ValueError(f"data-parallel rank {self.data_parallel_rank} is outside "
                             f"0..{self.data_parallel_size - 1} (VLLM_DP_RANK, VLLM_DP_SIZE)")

    @classmethod
    def resolve(cls, data_parallel_size: int, tensor_parallel_size: int = 1,
                pipeline_parallel_size: int = 1,
                distributed_executor_backend: str | None = None) -> "ParallelConfig":
        """vLLM's rule: an explicit size above 1 runs that many replicas here;
        otherwise VLLM_DP_SIZE / VLLM_DP_RANK say this process is one rank of
        replicas an external launcher started. Replicas of these models
        exchange nothing (no expert parallelism), so VLLM_DP_MASTER_IP/PORT
        have nothing to coordinate."""
        from vllm import envs
        ranks = dict(tensor_parallel_size=tensor_parallel_size,
                     pipeline_parallel_size=pipeline_parallel_size,
                     distributed_executor_backend=distributed_executor_backend)
        if data_parallel_size != 1:
            return cls(data_parallel_size, 0, **ranks)
        return cls(envs.VLLM_DP_SIZE, envs.VLLM_DP_RANK, external=envs.VLLM_DP_SIZE > 1,
                   **ranks)

    @property
    def world_size(self) -> int:
        """Worker ranks of one replica."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def replicas_here(self) -> int:
        """Engine replicas this front end runs."""
        return 1 if self.external else self.data_parallel_size

    def for_rank(self, rank: int) -> "ParallelConfig":
        return ParallelConfig(self.data_parallel_size, rank, self.external,
                              self.tensor_parallel_size, self.pipeline_parallel_size,
                              self.distributed_executor_backend)


@dataclass
class DeviceConfig:
    """Where the engine runs (vllm.platforms.resolve_device decided it) and
    the GPU worker's settings (unused on the CPU)."""
    device: str = "cpu"  # "cpu" or "cuda"
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False  # no CUDA graphs
    swap_space: float = 4  # GiB of host memory for preempted blocks (see README)


@dataclass
class VllmConfig:
    model_config: ModelConfig
    cache_config: CacheConfig
    scheduler_config: SchedulerConfig
    attention_backend: str | None = None
    parallel_config: ParallelConfig = field(default_factory=ParallelConfig)
    device_config: DeviceConfig = field(default_factory=DeviceConfig)
