"""IntermediateTensors (vLLM's name): what one pipeline stage hands the
next in place of token ids, by name."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class IntermediateTensors:
    tensors: dict[str, torch.Tensor]

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]
