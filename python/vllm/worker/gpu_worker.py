"""The GPU worker: loads the model onto its GPU, measures what a forward at
max_num_batched_tokens needs, sizes the KV cache in device memory from
gpu_memory_utilization (vllm/worker/gpu_planning.py does the arithmetic),
and runs steps through the same ModelRunner as the CPU worker (inputs staged
through one pinned buffer, sampling on the device).

Decode batches up to max_num_seqs replay CUDA graphs captured after the KV
cache is allocated (vllm/worker/cuda_graphs.py; enforce_eager=True runs
every step eagerly); their memory comes out of what gpu_memory_utilization
leaves. One GPU per engine (no tensor or pipeline parallelism on GPUs
yet). Preempted requests are recomputed, not swapped:
swap_space is accepted and unused, as the README says.

Never run on a GPU in this project yet (no device was lent to the work that
wrote it): the tests marked `cuda` (tests/engine/test_gpu_engine.py) are
what a lent machine runs first (bench/gpu/device_check.sh)."""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from vllm import envs
from vllm.attention.backends.metadata import AttentionMetadata
from vllm.attention.kv_cache_layout import block_bytes
from vllm.attention.selector import get_attn_backend
from vllm.config import VllmConfig
from vllm.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm.forward_context import set_forward_context
from vllm.model_executor.model_loader import get_model
from vllm.worker.cuda_graphs import DecodeGraphs
from vllm.worker.gpu_planning import MemoryProfile, capture_sizes, num_kv_blocks
from vllm.worker.model_runner import ModelRunner

logger = logging.getLogger(__name__)
_GIB = 1 << 30


def profile_token_layout(max_num_batched_tokens: int, max_model_len: int,
                         max_num_seqs: int) -> list[int]:
    """The prompt lengths of the profiling forward: max_num_batched_tokens
    tokens in as few sequences as max_model_len allows (at most
    max_num_seqs), the largest step the scheduler can send."""
    tokens = max_num_batched_tokens
    per_seq = min(max_model_len, tokens)
    lengths = [per_seq] * (tokens // per_seq)
    if tokens % per_seq:
        lengths.append(tokens % per_seq)
    return lengths[:max(1, max_num_seqs)]


def check_flashinfer_sampler() -> None:
    """VLLM_USE_FLASHINFER_SAMPLER=1 without the flashinfer package is an
    error naming it; with the package, sampling still runs on torch (the
    flashinfer kernels are not wired in yet), and the log says so."""
    import importlib.util
    if not envs.VLLM_USE_FLASHINFER_SAMPLER:
        return
    if importlib.util.find_spec("flashinfer") is None:
        raise ValueError("VLLM_USE_FLASHINFER_SAMPLER=1 needs the flashinfer package "
                         "(pip install flashinfer-python); unset it to sample with torch")
    logger.warning("VLLM_USE_FLASHINFER_SAMPLER=1: flashinfer is installed, but its sampling "
                   "kernels are not wired into this engine yet; sampling with torch")


class GPUWorker:
    def __init__(self, config: VllmConfig, eos_token_id: int | None, local_rank: int = 0) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("the GPU worker needs a GPU torch can use")
        check_flashinfer_sampler()
        self.config = config
        self.device = torch.device("cuda", local_rank)
        torch.cuda.set_device(self.device)
        mc, cc = config.model_config, config.cache_config
        self.attn_backend = get_attn_backend(config.attention_backend, "cuda")
        start = time.perf_counter()
        self.model = get_model(mc, self.attn_backend, self.device)
        torch.cuda.synchronize()
        weights = torch.cuda.memory_allocated(self.device)
        profile = self._profile(weights)
        utilization = config.device_config.gpu_memory_utilization
        if cc.num_blocks_override is not None:
            num_blocks = cc.num_blocks_override
        else:
            num_blocks = num_kv_blocks(profile, utilization, self.block_bytes(), cc.block_size,
                                       mc.max_model_len)
        cc.num_blocks = num_blocks
        self.kv_caches = self._caches(num_blocks)
        logger.info("GPU %s: %s; KV cache %d blocks of %d tokens (%.2f GiB) at "
                    "gpu_memory_utilization %.2f; ready in %.1f s", self.device,
                    profile.describe(), num_blocks, cc.block_size,
                    num_blocks * self.block_bytes() / _GIB, utilization,
                    time.perf_counter() - start)
        self.runner = ModelRunner(self.model, cc.block_size, eos_token_id,
                                  envs.VLLM_LOGITS_PROCESSOR_THREADS, device=self.device)
        if not config.device_config.enforce_eager:
            graphs = DecodeGraphs(self.model,
                                  capture_sizes(config.scheduler_config.max_num_seqs),
                                  cc.block_size, mc.max_model_len, self.device, capture=True)
            graphs.capture_all()
            self.runner.decode_graphs = graphs

    def block_bytes(self) -> int:
        mc, cc = self.config.model_config, self.config.cache_config
        return block_bytes(self.model.attention_layers(), mc.dtype, cc.block_size)

    def _caches(self, num_blocks: int) -> list[tuple[torch.Tensor, ...]]:
        mc, cc = self.config.model_config, self.config.cache_config
        caches = []
        for layer in self.model.attention_layers():
            # zeros, not garbage: a block's unwritten tail is multiplied by
            # zero attention weights, and 0 * NaN would poison the output
            tensors = tuple(torch.zeros(shape, dtype=mc.dtype, device=self.device)
                            for shape in layer.cache_shapes(num_blocks, cc.block_size))
            layer.kv_cache = tensors
            caches.append(tensors)
        return caches

    @torch.inference_mode()
    def _profile(self, weights: int) -> MemoryProfile:
        """The memory of the largest step: its peak above the weights and
        the temporary cache it ran on is the activation peak."""
        cache_bytes, logits = self._profile_forward(
            on_cache_ready=lambda: torch.cuda.reset_peak_memory_stats(self.device))
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(self.device) - weights - cache_bytes
        del logits
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        non_torch = max(0, (total - free) - torch.cuda.memory_reserved(self.device))
        return MemoryProfile(total=total, weights=weights, activation_peak=max(0, peak),
                             non_torch=non_torch)

    @torch.inference_mode()
    def _profile_forward(self, on_cache_ready=lambda: None) -> tuple[int, torch.Tensor]:
        """One forward of the largest step (max_num_batched_tokens prompt
        tokens, in profile_token_layout's sequences: sequence tokens 0, 1, 2,
        ... mod the vocabulary) on a cache
        just big enough for it, then the logits of each sequence's last
        token and their softmax, as the sampler takes them. Returns the
        temporary cache's bytes and those fp32 logits; the cache is gone
        afterwards. Device-neutral (the CPU tests run it)."""
        mc, cc, sc = (self.config.model_config, self.config.cache_config,
                      self.config.scheduler_config)
        bs = cc.block_size
        lengths = profile_token_layout(sc.max_num_batched_tokens, mc.max_model_len,
                                       sc.max_num_seqs)
        blocks_per_seq = [-(-n // bs) for n in lengths]
        caches = self._caches(sum(blocks_per_seq))
        cache_bytes = sum(t.numel() * t.element_size() for c in caches for t in c)
        on_cache_ready()
        table = np.zeros((len(lengths), max(blocks_per_seq)), dtype=np.int32)
        first = 0
        for i, n in enumerate(blocks_per_seq):
            table[i, :n] = np.arange(first, first + n)
            first += n
        positions = np.concatenate([np.arange(n) for n in lengths])
        rows = np.repeat(np.arange(len(lengths)), lengths)
        slots = table[rows, positions // bs].astype(np.int64) * bs + positions % bs
        query_start = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)

        def on_device(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array).to(self.device)
        md = AttentionMetadata(
            slot_mapping=on_device(slots), query_start_loc=on_device(query_start),
            seq_lens=on_device(np.asarray(lengths, dtype=np.int32)),
            block_tables=on_device(table), max_query_len=max(lengths),
            max_seq_len=max(lengths), block_size=bs)
        # token i at position i (mod the vocabulary): any ids cost the same,
        # and distinct ones let a test see a cache slot read from the wrong place
        vocab = self.config.model_config.hf_config.vocab_size
        input_ids = on_device(positions % vocab)
        try:
            with set_forward_context(md):
                hidden = self.model(input_ids, on_device(positions))
                last_rows = on_device(query_start[1:].astype(np.int64) - 1)
                logits = self.model.compute_logits(hidden[last_rows]).float()
                logits.softmax(-1)
        finally:
            for layer in self.model.attention_layers():
                layer.kv_cache = None
        return cache_bytes, logits

    def execute_model(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        return self.runner.execute(sched)
