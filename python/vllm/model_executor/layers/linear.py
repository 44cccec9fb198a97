"""Linear layers whose weights may arrive in shards (q/k/v, gate/up) and are
stored fused, so one GEMM serves several projections."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vllm import _custom_ops as ops

_HAS_SMALL_M = hasattr(torch.ops._C, "small_m_linear") if ops._C is not None else False


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
        if _use_small_m_kernel(x, self.weight):
            out = torch.empty(x.shape[0], self.out_features, dtype=x.dtype, device=x.device)
            ops.small_m_linear(out, x, self.weight, self.bias)
            return out
        return F.linear(x, self.weight, self.bias)


# Up to this many rows (decode batches) the weights are the traffic and our
# streaming kernel wins (2-3.7x at 1 row); at 4 rows it is at parity and at 16
# twice slower than oneDNN, whose bf16 dot products win once compute counts
# (bench/kernels/test_linear_bench.py).
SMALL_M_MAX_ROWS = 3


def _use_small_m_kernel(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # 16-bit weights only: fp32 stays on torch, whose summation order the
    # token-exact comparisons with transformers rely on.
    return (x.dim() == 2 and x.shape[0] <= SMALL_M_MAX_ROWS and x.device.type == "cpu"
            and weight.dtype in (torch.bfloat16, torch.float16) and _HAS_SMALL_M)
