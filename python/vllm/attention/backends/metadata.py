"""What every attention backend gets for one step (built by the runner)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    # [num_tokens] int64: cache slot of each new token (block * block_size + offset)
    slot_mapping: torch.Tensor
    # [num_seqs + 1] int32: where each sequence's query tokens start
    query_start_loc: torch.Tensor
    # [num_seqs] int32: context length of each sequence after this step
    seq_lens: torch.Tensor
    # [num_seqs, max_blocks] int32 block tables
    block_tables: torch.Tensor
    max_query_len: int
    max_seq_len: int
    block_size: int
    # Rows of the step whose final hidden states are read (the sampled ones,
    # each sequence's last row, ascending), or None for all: the model's last
    # layer then computes attention and MLP for these rows only (all rows'
    # keys and values still go to the cache), as llama.cpp does.
    output_rows: torch.Tensor | None = None
    # [num_seqs + 1] int32: query_start_loc over output_rows.
    output_query_start_loc: torch.Tensor | None = None

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]

    @property
    def decode_only(self) -> bool:
        return self.max_query_len == 1

    def for_output_rows(self) -> AttentionMetadata:
        """The metadata for queries of the output rows only: every sequence's
        query is its last 0 or 1 rows (the kernels' convention), the cache
        writes (slot_mapping) stay those of all rows."""
        if self.output_rows is None:
            return self
        return dataclasses.replace(self, query_start_loc=self.output_query_start_loc,
                                   output_rows=None, output_query_start_loc=None)
