"""The tensor-parallel collectives by vLLM's function names (each on the
current tensor-parallel group; identity with one rank)."""
from __future__ import annotations

from typing import Any

import torch

from vllm.distributed.parallel_state import get_tp_group


def tensor_model_parallel_all_reduce(input_: torch.Tensor) -> torch.Tensor:
    return get_tp_group().all_reduce(input_)


def reduce_over_tensor_ranks(partial: torch.Tensor) -> torch.Tensor:
    """The sum of every tensor rank's partial result: itself on one rank (no
    group needed) and for an empty step, which every rank sees alike."""
    from vllm.distributed.parallel_state import get_tensor_model_parallel_world_size
    if get_tensor_model_parallel_world_size() == 1 or partial.numel() == 0:
        return partial
    return tensor_model_parallel_all_reduce(partial)


def tensor_model_parallel_all_gather(input_: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return get_tp_group().all_gather(input_, dim)


def tensor_model_parallel_gather(input_: torch.Tensor, dst: int = 0,
                                 dim: int = -1) -> torch.Tensor | None:
    return get_tp_group().gather(input_, dst, dim)


def broadcast_tensor_dict(tensor_dict: dict[str, Any] | None = None,
                          src: int = 0) -> dict[str, Any]:
    return get_tp_group().broadcast_tensor_dict(tensor_dict, src)
