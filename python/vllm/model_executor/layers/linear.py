"""Linear layers whose weights may arrive in shards (q/k/v, gate/up) and are
stored fused, so one GEMM serves several projections."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    """y = x W^T (+ b), W stored [out, in]. `shard_sizes` names the row
    blocks of a fused weight, in order (e.g. {"q": 576, "k": 192, "v": 192})."""

    def __init__(self, in_features: int, shard_sizes: dict[str, int] | int, bias: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if isinstance(shard_sizes, int):
            shard_sizes = {"": shard_sizes}
        self.shard_offsets: dict[str, tuple[int, int]] = {}
        offset = 0
        for shard, size in shard_sizes.items():
            self.shard_offsets[shard] = (offset, size)
            offset += size
        self.in_features, self.out_features = in_features, offset
        self.weight = nn.Parameter(torch.empty(offset, in_features, dtype=dtype),
                                   requires_grad=False)
        self.bias = (nn.Parameter(torch.empty(offset, dtype=dtype), requires_grad=False)
                     if bias else None)

    def load(self, name: str, loaded: torch.Tensor, shard: str = "") -> None:
        """Copy a checkpoint tensor ("weight" or "bias") into its row block."""
        param = self.weight if name == "weight" else self.bias
        if param is None:
            raise ValueError(f"checkpoint has a {name} this layer does not use")
        start, size = self.shard_offsets[shard]
        expected = (size,) + tuple(param.shape[1:])
        if tuple(loaded.shape) != expected:
            raise ValueError(f"checkpoint {name} of shard {shard!r} has shape "
                             f"{tuple(loaded.shape)}, expected {expected}")
        param.data[start:start + size].copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)
