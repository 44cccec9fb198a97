"""Process groups of a multi-process engine, with vLLM's names: the world,
the tensor-parallel group and the pipeline-parallel group, each a
GroupCoordinator over a torch.distributed gloo group (CPU tensors).

Ranks are laid out as in vLLM: rank = pp_rank * tp_size + tp_rank, so a
tensor-parallel group is tp_size consecutive ranks. A tensor-parallel group
whose ranks share one machine also gets a shared-memory all-reduce
(shm_all_reduce.py), used for the tensors that fit its slots.
"""
from __future__ import annotations

import pickle
from typing import Any

import torch
import torch.distributed as dist

from vllm.distributed.shm_all_reduce import SharedMemoryAllReduce, shm_available


class GroupCoordinator:
    """One group of ranks: its gloo process group, this process's place in
    it, and the collectives the model and the executor use."""

    def __init__(self, ranks: list[int], name: str, use_shm: bool = False) -> None:
        self.ranks = ranks
        self.name = name
        self.world_size = len(ranks)
        self.rank = dist.get_rank()
        self.rank_in_group = ranks.index(self.rank)
        self.device_group = dist.new_group(ranks, backend="gloo")
        self.first_rank, self.last_rank = ranks[0], ranks[-1]
        self.shm = (SharedMemoryAllReduce(self.device_group, self.rank_in_group,
                                          self.world_size)
                    if use_shm and self.world_size > 1 and shm_available() else None)

    @property
    def is_first_rank(self) -> bool:
        return self.rank == self.first_rank

    @property
    def is_last_rank(self) -> bool:
        return self.rank == self.last_rank

    @property
    def next_rank(self) -> int:
        return self.ranks[(self.rank_in_group + 1) % self.world_size]

    @property
    def prev_rank(self) -> int:
        return self.ranks[(self.rank_in_group - 1) % self.world_size]

    # ------------------------------------------------------------ collectives
    def all_reduce(self, input_: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over the group (a new tensor; the input is
        left as it was)."""
        if self.world_size == 1:
            return input_
        if self.shm is not None and self.shm.fits(input_):
            return self.shm.all_reduce(input_)
        out = input_.clone()
        dist.all_reduce(out, group=self.device_group)
        return out

    def all_gather(self, input_: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The ranks' tensors concatenated along `dim`, in rank order."""
        if self.world_size == 1:
            return input_
        parts = [torch.empty_like(input_) for _ in range(self.world_size)]
        dist.all_gather(parts, input_.contiguous(), group=self.device_group)
        return torch.cat(parts, dim=dim)

    def gather(self, input_: torch.Tensor, dst: int = 0, dim: int = -1) -> torch.Tensor | None:
        """The ranks' tensors concatenated along `dim` on rank `dst` of the
        group (None elsewhere)."""
        if self.world_size == 1:
            return input_
        dst_global = self.ranks[dst]
        parts = ([torch.empty_like(input_) for _ in range(self.world_size)]
                 if self.rank == dst_global else None)
        dist.gather(input_.contiguous(), parts, dst=dst_global, group=self.device_group)
        return torch.cat(parts, dim=dim) if parts is not None else None

    def broadcast(self, input_: torch.Tensor, src: int = 0) -> torch.Tensor:
        """In place: every rank's `input_` becomes rank `src`'s."""
        if self.world_size > 1:
            dist.broadcast(input_, src=self.ranks[src], group=self.device_group)
        return input_

    def broadcast_object(self, obj: Any = None, src: int = 0) -> Any:
        if self.world_size == 1:
            return obj
        box = [obj if self.rank_in_group == src else None]
        dist.broadcast_object_list(box, src=self.ranks[src], group=self.device_group)
        return box[0]

    def broadcast_tensor_dict(self, tensor_dict: dict[str, Any] | None = None,
                              src: int = 0) -> dict[str, Any]:
        """Rank `src`'s dict on every rank: its metadata (keys, non-tensor
        values, tensor shapes and dtypes) as one pickled object, then each
        tensor by a broadcast of its own (no pickling of tensor data)."""
        if self.world_size == 1:
            return tensor_dict
        if self.rank_in_group == src:
            metadata, tensors = _split_tensor_dict(tensor_dict)
            self.broadcast_object(metadata, src)
            for tensor in tensors:
                self.broadcast(tensor.contiguous(), src)
            return tensor_dict
        metadata = self.broadcast_object(None, src)
        return _join_tensor_dict(metadata, lambda t: self.broadcast(t, src))

    def send_tensor_dict(self, tensor_dict: dict[str, Any], dst: int | None = None) -> None:
        """To rank `dst` of the group (default: the next one)."""
        dst_global = self.next_rank if dst is None else self.ranks[dst]
        metadata, tensors = _split_tensor_dict(tensor_dict)
        payload = torch.frombuffer(bytearray(pickle.dumps(metadata)), dtype=torch.uint8)
        dist.send(torch.tensor([payload.numel()], dtype=torch.int64), dst=dst_global,
                  group=self.device_group)
        dist.send(payload, dst=dst_global, group=self.device_group)
        for tensor in tensors:
            dist.send(tensor.contiguous(), dst=dst_global, group=self.device_group)

    def recv_tensor_dict(self, src: int | None = None) -> dict[str, Any]:
        """From rank `src` of the group (default: the previous one)."""
        src_global = self.prev_rank if src is None else self.ranks[src]
        size = torch.empty(1, dtype=torch.int64)
        dist.recv(size, src=src_global, group=self.device_group)
        payload = torch.empty(int(size), dtype=torch.uint8)
        dist.recv(payload, src=src_global, group=self.device_group)
        metadata = pickle.loads(payload.numpy().tobytes())

        def receive(t: torch.Tensor) -> torch.Tensor:
            dist.recv(t, src=src_global, group=self.device_group)
            return t
        return _join_tensor_dict(metadata, receive)

    def isend(self, tensor: torch.Tensor, dst: int | None = None) -> dist.Work:
        """Non-blocking: to rank `dst` of the group (default: the next one).
        The tensor must stay alive and unchanged until the work completes."""
        dst_global = self.next_rank if dst is None else self.ranks[dst]
        return dist.isend(tensor, dst=dst_global, group=self.device_group)

    def recv(self, tensor: torch.Tensor, src: int | None = None) -> torch.Tensor:
        """Into `tensor` (its shape and dtype agreed beforehand), from rank
        `src` of the group (default: the previous one)."""
        src_global = self.prev_rank if src is None else self.ranks[src]
        dist.recv(tensor, src=src_global, group=self.device_group)
        return tensor

    def all_reduce_min(self, value: int) -> int:
        """The smallest of the ranks' integers."""
        if self.world_size == 1:
            return value
        box = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(box, op=dist.ReduceOp.MIN, group=self.device_group)
        return int(box)

    def barrier(self) -> None:
        dist.barrier(group=self.device_group)

    def destroy(self) -> None:
        if self.shm is not None:
            self.shm.close()
            self.shm = None


def _split_tensor_dict(tensor_dict: dict[str, Any]) -> tuple[list, list[torch.Tensor]]:
    metadata, tensors = [], []
    for key, value in tensor_dict.items():
        if isinstance(value, torch.Tensor):
            if value.device.type != "cpu":
                raise ValueError(f"{key}: this communicator moves CPU tensors, got {value.device}")
            metadata.append((key, ("tensor", value.dtype, tuple(value.shape))))
            tensors.append(value)
        else:
            metadata.append((key, ("value", value)))
    return metadata, tensors


def _join_tensor_dict(metadata: list, fill) -> dict[str, Any]:
    out = {}
    for key, entry in metadata:
        if entry[0] == "tensor":
            out[key] = fill(torch.empty(entry[2], dtype=entry[1]))
        else:
            out[key] = entry[1]
    return out


_WORLD: GroupCoordinator | None = None
_TP: GroupCoordinator | None = None
_PP: GroupCoordinator | None = None


def init_distributed_environment(world_size: int, rank: int, distributed_init_method: str,
                                 local_rank: int = 0, backend: str = "gloo") -> None:
    """Joins the process group (gloo: CPU tensors); `distributed_init_method`
    as torch.distributed takes it, e.g. tcp://VLLM_HOST_IP:VLLM_PORT."""
    global _WORLD
    if backend != "gloo":
        raise ValueError(f"distributed backend {backend!r} is not supported on CPU: use 'gloo'")
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method=distributed_init_method,
                                world_size=world_size, rank=rank)
    if _WORLD is None:
        _WORLD = GroupCoordinator(list(range(world_size)), "world")


def initialize_model_parallel(tensor_model_parallel_size: int = 1,
                              pipeline_model_parallel_size: int = 1) -> None:
    """Splits the world into tensor- and pipeline-parallel groups."""
    global _TP, _PP
    if _WORLD is None:
        raise RuntimeError("init_distributed_environment must come first")
    world = _WORLD.world_size
    tp, pp = tensor_model_parallel_size, pipeline_model_parallel_size
    if tp * pp != world:
        raise ValueError(f"tensor_parallel_size {tp} x pipeline_parallel_size {pp} != "
                         f"world size {world}")
    # every rank takes part in creating every group, in the same order
    # (torch.distributed's rule), members through a GroupCoordinator
    me = dist.get_rank()
    for p in range(pp):
        ranks = list(range(p * tp, (p + 1) * tp))
        if me in ranks:
            _TP = GroupCoordinator(ranks, "tp", use_shm=True)
        else:
            dist.new_group(ranks, backend="gloo")
    for t in range(tp):
        ranks = list(range(t, world, tp))
        if me in ranks:
            _PP = GroupCoordinator(ranks, "pp")
        else:
            dist.new_group(ranks, backend="gloo")


def get_world_group() -> GroupCoordinator:
    if _WORLD is None:
        raise RuntimeError("the distributed environment is not initialised")
    return _WORLD


def get_tp_group() -> GroupCoordinator:
    if _TP is None:
        raise RuntimeError("tensor-parallel group is not initialised")
    return _TP


def get_pp_group() -> GroupCoordinator:
    if _PP is None:
        raise RuntimeError("pipeline-parallel group is not initialised")
    return _PP


def model_parallel_is_initialized() -> bool:
    return _TP is not None and _PP is not None


def get_tensor_model_parallel_world_size() -> int:
    return _TP.world_size if _TP is not None else 1


def get_tensor_model_parallel_rank() -> int:
    return _TP.rank_in_group if _TP is not None else 0


def destroy_model_parallel() -> None:
    global _TP, _PP
    for group in (_TP, _PP):
        if group is not None:
            group.destroy()
    _TP = _PP = None


def destroy_distributed_environment() -> None:
    global _WORLD
    destroy_model_parallel()
    if _WORLD is not None:
        _WORLD.destroy()
        _WORLD = None
    if dist.is_initialized():
        dist.destroy_process_group()


def get_pipeline_model_parallel_rank() -> int:
    return _PP.rank_in_group if _PP is not None else 0


def get_pipeline_model_parallel_world_size() -> int:
    return _PP.world_size if _PP is not None else 1
