"""All-reduce between the ranks of a group on one machine through shared
memory, as vLLM's CPU backend does instead of a gloo round trip: each rank
writes its tensor into its own slot of a shared buffer, raises its flag, waits
for every rank's flag, and sums the slots itself.

The buffer (one POSIX shared-memory segment, created by the group's first
rank, its name sent to the others over gloo) holds a header of one int64
flag per rank, then two banks of per-rank slots. Round g writes bank g % 2
and sets the rank's flag to g. A rank that reaches round g + 2 (writing bank
g % 2 again) has seen every flag at g + 1, so every rank has finished
reading round g: two banks suffice, no second barrier. Data are stored
before the flag that publishes them; x86's store ordering (TSO) keeps that
order for the readers. Tensors larger than a slot go through gloo.
"""
from __future__ import annotations

import os
import time
from multiprocessing import resource_tracker, shared_memory

import numpy as np
import torch
import torch.distributed as dist

DEFAULT_SLOT_BYTES = 4 << 20  # a 64-token x 16k-wide bf16 activation


class SharedMemoryAllReduce:
    def __init__(self, group, rank_in_group: int, world_size: int,
                 slot_bytes: int = DEFAULT_SLOT_BYTES) -> None:
        self.rank, self.world_size = rank_in_group, world_size
        self.slot_bytes = slot_bytes
        self.round = 0
        header = 64 * ((8 * world_size + 63) // 64)
        size = header + 2 * world_size * slot_bytes
        names = [None]
        if rank_in_group == 0:
            self._shm = shared_memory.SharedMemory(create=True, size=size)
            names = [self._shm.name]
        dist.broadcast_object_list(names, src=dist.get_global_rank(group, 0), group=group)
        if rank_in_group != 0:
            self._shm = shared_memory.SharedMemory(name=names[0])
            # Python 3.11 registers attached segments with the resource
            # tracker too, which would unlink (and warn about) the creator's
            # segment when this process exits
            resource_tracker.unregister(self._shm._name, "shared_memory")
        # every rank has attached: the first may unlink the name (the memory
        # lives until the last rank closes it; nothing is left in /dev/shm
        # even if a rank dies)
        dist.barrier(group=group)
        if rank_in_group == 0:
            self._shm.unlink()
        buf = np.frombuffer(self._shm.buf, dtype=np.uint8)
        self._flags = buf[:8 * world_size].view(np.int64)
        self._data = torch.from_numpy(buf[header:])
        self._flags[rank_in_group] = 0

    def fits(self, tensor: torch.Tensor) -> bool:
        return tensor.numel() * tensor.element_size() <= self.slot_bytes

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks, in a new tensor of `tensor`'s shape and dtype
        (summed in the tensor's dtype, in rank order: every rank gets the
        same bits)."""
        self.round += 1
        bank = self.round % 2
        nbytes = tensor.numel() * tensor.element_size()
        slots = self._data[bank * self.world_size * self.slot_bytes:
                           (bank + 1) * self.world_size * self.slot_bytes]
        slots = slots.view(self.world_size, self.slot_bytes)[:, :nbytes]
        mine = slots[self.rank].view(tensor.dtype).view(tensor.shape)
        mine.copy_(tensor)
        self._flags[self.rank] = self.round
        spins = 0
        while int(self._flags.min()) < self.round:
            spins += 1
            if spins > 1000:
                time.sleep(0)  # give the core up while a peer is descheduled
        out = slots[0].view(tensor.dtype).view(tensor.shape).clone()
        for r in range(1, self.world_size):
            out += slots[r].view(tensor.dtype).view(tensor.shape)
        return out

    def close(self) -> None:
        if getattr(self, "_shm", None) is not None:
            self._flags = self._data = None
            self._shm.close()
            self._shm = None

    def __del__(self) -> None:
        try:
            self.close()
        except (BufferError, OSError):
            pass


def shm_available() -> bool:
    return os.path.isdir("/dev/shm")
