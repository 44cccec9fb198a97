"""Tensor-parallel layers (Megatron's split, as vLLM's): each rank holds a
slice of every weight and the layers exchange activations at two points per
block.

- ColumnParallelLinear: the output features split across ranks (each fused
  shard on its own, e.g. q, k and v heads); no communication.
- RowParallelLinear: the input features split; each rank's partial product
  summed over ranks (all-reduce), then the bias.
- VocabParallelEmbedding: the vocabulary split in equal ranges; a token
  outside a rank's range looks up zeros there, and the all-reduce fills it
  in. As the LM head, each rank's logits for its range, all-gathered.

Checkpoint tensors come whole; each layer slices its part at load, dense or
quantized (a quantized weight by rows, or by whole groups of inputs).
"""
from __future__ import annotations

import torch
from torch import nn

from vllm.distributed.parallel_state import (get_tensor_model_parallel_rank,
                                             get_tensor_model_parallel_world_size, get_tp_group)
from vllm.model_executor.layers.linear import Linear, apply_linear
from vllm.model_executor.layers.quantization.embedding import QuantizedEmbedding
from vllm.model_executor.layers.quantization.packing import QuantizedWeight


def tp_rank_and_size() -> tuple[int, int]:
    return get_tensor_model_parallel_rank(), get_tensor_model_parallel_world_size()


def divide(total: int, parts: int, what: str) -> int:
    if total % parts:
        raise ValueError(f"tensor parallelism: {what} ({total}) is not divisible by "
                         f"tensor_parallel_size {parts}")
    return total // parts


class ColumnParallelLinear(Linear):
    """`shard_ranges`: for each fused shard, the rows of the checkpoint's
    tensor this rank holds (start, length)."""

    def __init__(self, in_features: int, shard_ranges: dict[str, tuple[int, int]],
                 bias: bool = False, dtype: torch.dtype = torch.float32,
                 gate_up: bool = False) -> None:
        super().__init__(in_features, {s: n for s, (_, n) in shard_ranges.items()}, bias=bias,
                         dtype=dtype, gate_up=gate_up)
        self.shard_ranges = shard_ranges

    def load(self, name: str, loaded: torch.Tensor | QuantizedWeight, shard: str = "") -> None:
        start, length = self.shard_ranges[shard]
        part = (loaded.row_range(start, length) if isinstance(loaded, QuantizedWeight)
                else loaded.narrow(0, start, length))
        super().load(name, part, shard)


class RowParallelLinear(Linear):
    """The input features split in equal ranges; y = all_reduce(x_r W_r^T) + b.
    `reduce_results=False` returns the rank's partial product: the caller
    sums it with other partial sums and all-reduces once (no bias then)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 dtype: torch.dtype = torch.float32, reduce_results: bool = True) -> None:
        self.tp_rank, self.tp_size = tp_rank_and_size()
        local = divide(in_features, self.tp_size, "the input features of a row-parallel layer")
        if bias and not reduce_results:
            raise ValueError("a row-parallel layer with a bias reduces its own results")
        super().__init__(local, out_features, bias=bias, dtype=dtype)
        self.reduce_results = reduce_results

    def load(self, name: str, loaded: torch.Tensor | QuantizedWeight, shard: str = "") -> None:
        start = self.tp_rank * self.in_features
        if isinstance(loaded, QuantizedWeight):
            loaded = loaded.column_range(start, self.in_features)
        elif name == "weight":
            loaded = loaded.narrow(1, start, self.in_features)
        super().load(name, loaded, shard)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        partial = apply_linear(x, self.weight, None, self.packed_weight)
        if not self.reduce_results:
            return partial
        out = get_tp_group().all_reduce(partial)
        return out + self.bias if self.bias is not None else out


class VocabParallelEmbedding(nn.Module):
    """Rows [rank * per_rank, (rank + 1) * per_rank) of the (padded) vocabulary.
    A quantized checkpoint table stays quantized: this rank's rows (padded
    with zero rows to per_rank) in a QuantizedEmbedding, which the LM head
    reads packed as on one rank."""

    def __init__(self, vocab_size: int, hidden: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = tp_rank_and_size()
        self.vocab_size = vocab_size
        self.per_rank = -(-vocab_size // self.tp_size)
        self.start = self.tp_rank * self.per_rank
        self.weight = nn.Parameter(torch.zeros(self.per_rank, hidden, dtype=dtype),
                                   requires_grad=False)
        self.quantized: QuantizedEmbedding | None = None

    def load(self, loaded: torch.Tensor | QuantizedWeight) -> None:
        if tuple(loaded.shape) != (self.vocab_size, self.weight.shape[1]):
            raise ValueError(f"checkpoint embedding has shape {tuple(loaded.shape)}, expected "
                             f"{(self.vocab_size, self.weight.shape[1])}")
        if isinstance(loaded, QuantizedWeight):
            end = min(self.start + self.per_rank, self.vocab_size)
            rows = pad_rows(loaded.row_range(self.start, end - self.start), self.per_rank)
            self.quantized = QuantizedEmbedding(rows, self.weight.dtype)
            del self.weight  # the dense parameter's memory
            self.weight = self.quantized.weight  # shape and dtype only
            return
        rows = loaded[self.start:self.start + self.per_rank]
        self.weight.data[:rows.shape[0]].copy_(rows)  # the padding rows stay zero

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        local = input_ids - self.start
        outside = (local < 0) | (local >= self.per_rank)
        local = local.masked_fill(outside, 0)
        rows = self.weight[local] if self.quantized is None else self.quantized(local)
        rows.masked_fill_(outside.unsqueeze(-1), 0)
        return get_tp_group().all_reduce(rows)

    def gather_logits(self, local_logits: torch.Tensor) -> torch.Tensor:
        """Each rank's logits for its vocabulary range -> the whole row."""
        return get_tp_group().all_gather(local_logits, dim=-1)[..., :self.vocab_size]


def pad_rows(weight: QuantizedWeight, rows: int) -> QuantizedWeight:
    """`weight` with zero rows appended up to `rows` (all-zero scales and
    offsets: they compute zeros)."""
    n, k = weight.shape
    if n == rows:
        return weight
    extra = rows - n
    return QuantizedWeight(
        torch.cat([weight.values, weight.values.new_zeros(extra, k)]),
        torch.cat([weight.scales, weight.scales.new_zeros(extra, weight.scales.shape[1])]),
        torch.cat([weight.offsets, weight.offsets.new_zeros(extra, weight.offsets.shape[1])]),
        weight.bits, weight.group_size, weight.input_order)
