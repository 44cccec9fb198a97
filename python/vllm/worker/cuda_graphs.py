"""Decode steps from CUDA graphs: the model's forward for a decode batch
(one token per sequence) captured once per batch size
(gpu_planning.capture_sizes, largest first, into one memory pool) and
replayed with the step's inputs copied into the captured static buffers.

A batch pads to the next captured size: the padded rows read token 0 at
position 0 with a one-token context in block 0 and write no cache entry
(slot -1, which reshape_and_cache skips); their hidden states are dropped.
The block table is as wide as a max_model_len sequence needs, so any
decode batch fits one graph. Prefill and mixed steps, larger batches,
steps that read only some rows (output_rows) and pipeline stages run
eagerly. Logits and sampling run eagerly after the replay.

Without capture (`capture=False`) the same padding and static buffers run
the model eagerly: the CPU tests check with it that padding changes no
real row (tests/engine/test_decode_graphs.py)."""
from __future__ import annotations

import logging
import time

import torch

from vllm.attention.backends.metadata import AttentionMetadata
from vllm.forward_context import set_forward_context
from vllm.worker.gpu_planning import padded_batch_size

logger = logging.getLogger(__name__)


class DecodeGraphs:
    def __init__(self, model: torch.nn.Module, sizes: list[int], block_size: int,
                 max_model_len: int, device: torch.device, capture: bool) -> None:
        self.model = model
        self.sizes = sorted(set(sizes), reverse=True)
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.capture = capture
        largest = self.sizes[0]
        blocks = -(-max_model_len // block_size)
        self.input_ids = torch.zeros(largest, dtype=torch.int64, device=device)
        self.positions = torch.zeros(largest, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((largest,), -1, dtype=torch.int64, device=device)
        self.seq_lens = torch.ones(largest, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(largest, blocks, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(largest + 1, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    def metadata(self, size: int) -> AttentionMetadata:
        # max_seq_len: the largest any replay can meet (the kernels size
        # nothing by it; a graph keeps the value it was captured with)
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:size], query_start_loc=self.query_start_loc[:size + 1],
            seq_lens=self.seq_lens[:size], block_tables=self.block_tables[:size],
            max_query_len=1, max_seq_len=self.max_model_len, block_size=self.block_size)

    def _forward(self, size: int) -> torch.Tensor:
        with set_forward_context(self.metadata(size)):
            return self.model(self.input_ids[:size], self.positions[:size])

    @torch.inference_mode()
    def capture_all(self) -> None:
        """Captures every size, largest first into one pool; logs the time
        and the memory the graphs took."""
        start = time.perf_counter()
        before = torch.cuda.memory_allocated()
        pool = None
        for size in self.sizes:
            self._forward(size)  # warm-up: lazy initialisation stays out of the graph
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[size] = self._forward(size)
            pool = graph.pool()
            self.graphs[size] = graph
        torch.cuda.synchronize()
        logger.info("captured %d CUDA graphs for decode batches of %d..%d sequences in %.1f s "
                    "(%.0f MiB)", len(self.sizes), self.sizes[-1], self.sizes[0],
                    time.perf_counter() - start,
                    (torch.cuda.memory_allocated() - before) / (1 << 20))

    def padded_size(self, num_seqs: int) -> int | None:
        return padded_batch_size(num_seqs, self.sizes)

    @torch.inference_mode()
    def run(self, size: int, inputs: dict[str, torch.Tensor], num_seqs: int) -> torch.Tensor:
        """Hidden states of the step's num_seqs decode rows, run as a batch
        of `size` (the inputs as ModelRunner stages them)."""
        n = num_seqs
        self.input_ids[:n].copy_(inputs["input_ids"])
        self.input_ids[n:size].zero_()
        self.positions[:n].copy_(inputs["positions"])
        self.positions[n:size].zero_()
        self.slot_mapping[:n].copy_(inputs["slot_mapping"])
        self.slot_mapping[n:size].fill_(-1)
        self.seq_lens[:n].copy_(inputs["seq_lens"])
        self.seq_lens[n:size].fill_(1)
        table = inputs["block_tables"]
        self.block_tables[:n, :table.shape[1]].copy_(table)
        self.block_tables[:n, table.shape[1]:].zero_()
        self.block_tables[n:size].zero_()
        if self.capture:
            self.graphs[size].replay()
            return self.outputs[size][:n]
        return self._forward(size)[:n]
