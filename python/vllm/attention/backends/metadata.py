"""What every attention backend gets for one step (built by the runner)."""
from __future__ import annotations

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

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]

    @property
    def decode_only(self) -> bool:
        return self.max_query_len == 1
