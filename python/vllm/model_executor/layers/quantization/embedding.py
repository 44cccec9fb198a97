"""An embedding table kept quantized (a GGUF token_embd, often the tied LM
head too): packed once for quant_linear, so the LM head streams the packed
bytes, and a lookup dequantizes only the rows it reads."""
from __future__ import annotations

import torch
from torch import nn

from vllm.model_executor.layers.quantization.packing import (QuantizedWeight, pack_quantized,
                                                             unpack_columns)


class QuantizedEmbedding(nn.Module):
    def __init__(self, weight: QuantizedWeight, dtype: torch.dtype) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.bits, self.group_size = weight.bits, weight.group_size
        self.dtype = dtype
        # packed as an LM head reads it ([vocab] output columns)
        self.register_buffer("packed", pack_quantized(weight), persistent=False)
        # shape and dtype only, for code that reads them (no storage)
        self.weight = torch.zeros((), dtype=dtype).expand(self.num_embeddings, self.embedding_dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = unpack_columns(self.packed, self.bits, self.group_size, self.embedding_dim,
                              input_ids.reshape(-1))
        return rows.dequantize(self.dtype).view(*input_ids.shape, self.embedding_dim)
