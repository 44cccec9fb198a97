"""All-reduce between the ranks of a group on one machine through shared
memory, as vLLM's CPU backend does instead of a gloo round trip: each rank
writes its tensor into its own slot of a shared buffer, raises its flag, waits
for every rank's flag, and sums the slots itself.

The buffer (a file in /dev/shm created by the group's first rank, its name
sent to the others over gloo, mapped by every rank and unlinked once all
have it) holds a header of one int64
flag per rank, then two banks of per-rank slots. Round g writes bank g % 2
and sets the rank's flag to g. A rank that reaches round g + 2 (writing bank
g % 2 again) has seen every flag at g + 1, so every rank has finished
reading round g: two banks suffice, no second barrier. Data are stored
before the flag that publishes them; x86's store ordering (TSO) keeps that
order for the readers. Tensors larger than a slot go through gloo.

A rank waiting for the others checks, every few milliseconds of waiting,
that the processes behind are alive: a peer that died fails the all-reduce
at once (gloo would notice a closed connection; a flag never notices).
"""
from __future__ import annotations

import mmap
import os
import time
import uuid

import numpy as np
import torch
import torch.distributed as dist

DEFAULT_SLOT_BYTES = 4 << 20  # a 64-token x 16k-wide bf16 activation
SHM_DIR = "/dev/shm"
_LIVENESS_CHECK_S = 0.05


def _process_gone(pid: int) -> bool:
    """Exited, or a zombie its parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        return False


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
            names = [f"vllm-all-reduce-{os.getpid()}-{uuid.uuid4().hex[:12]}"]
        dist.broadcast_object_list(names, src=dist.get_global_rank(group, 0), group=group)
        path = os.path.join(SHM_DIR, names[0])
        # a plain file in /dev/shm, mapped: no multiprocessing resource
        # tracker involved (it would unlink or warn about the segment in
        # whichever process exits first)
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if rank_in_group == 0 else 0)
        if rank_in_group == 0:
            fd = os.open(path, flags, 0o600)
            os.ftruncate(fd, size)
        dist.barrier(group=group)  # created before anyone opens it
        if rank_in_group != 0:
            fd = os.open(path, flags)
        try:
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        # every rank has it mapped: the name can go (the memory lives until
        # the last rank unmaps it; nothing stays in /dev/shm even if a rank
        # dies)
        dist.barrier(group=group)
        if rank_in_group == 0:
            os.unlink(path)
        buf = np.frombuffer(self._map, dtype=np.uint8)
        self._flags = buf[:8 * world_size].view(np.int64)
        self._data = torch.from_numpy(buf[header:])
        self._flags[rank_in_group] = 0
        pids: list = [None] * world_size
        dist.all_gather_object(pids, os.getpid(), group=group)
        self._pids = pids

    def fits(self, tensor: torch.Tensor) -> bool:
        return tensor.numel() * tensor.element_size() <= self.slot_bytes

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks, in a new tensor of `tensor`'s shape and dtype,
        in rank order (every rank gets the same bits); 16-bit tensors of more
        than two ranks are summed in fp32 and rounded once."""
        self.round += 1
        bank = self.round % 2
        nbytes = tensor.numel() * tensor.element_size()
        slots = self._data[bank * self.world_size * self.slot_bytes:
                           (bank + 1) * self.world_size * self.slot_bytes]
        slots = slots.view(self.world_size, self.slot_bytes)[:, :nbytes]
        mine = slots[self.rank].view(tensor.dtype).view(tensor.shape)
        mine.copy_(tensor)
        self._flags[self.rank] = self.round
        spins, next_check = 0, None
        while int(self._flags.min()) < self.round:
            spins += 1
            if spins > 1000:
                time.sleep(0)  # give the core up while a peer is descheduled
                now = time.monotonic()
                if next_check is None:
                    next_check = now + _LIVENESS_CHECK_S
                elif now >= next_check:
                    self._fail_if_a_peer_died()
                    next_check = now + _LIVENESS_CHECK_S
        parts = [slots[r].view(tensor.dtype).view(tensor.shape) for r in range(self.world_size)]
        if self.world_size == 2 or tensor.dtype == torch.float32:
            return parts[0] + parts[1] if self.world_size == 2 else sum(parts[1:], parts[0].clone())
        # 16-bit: summed in fp32, rounded once
        return sum((p.float() for p in parts[1:]), parts[0].float()).to(tensor.dtype)

    def _fail_if_a_peer_died(self) -> None:
        behind = np.flatnonzero(self._flags < self.round)
        gone = [int(r) for r in behind if _process_gone(self._pids[r])]
        if gone:
            raise RuntimeError(f"shared-memory all-reduce: rank(s) {gone} of the group "
                               f"(pid {[self._pids[r] for r in gone]}) exited")

    def close(self) -> None:
        if getattr(self, "_map", None) is not None:
            self._flags = self._data = None
            self._map.close()
            self._map = None

    def __del__(self) -> None:
        try:
            self.close()
        except (BufferError, OSError):
            pass


def shm_available() -> bool:
    return os.path.isdir(SHM_DIR)
