"""A device runner's step inputs: the step's integer arrays (token ids,
positions, slot mapping, block table, sequence lengths, ...) packed into one
pinned host buffer and copied to the device in one non-blocking copy, then
handed out as views of the device buffer (cast on the device where a kernel
wants int32).

Why one copy: a decode step's inputs are a few hundred bytes in six arrays;
six small copies cost six launches and six synchronisation points, one costs
one. Pinned, so the copy is a real asynchronous DMA that overlaps the host's
work. The buffers grow (doubling) and are reused: the next step refills the
host buffer only after the previous copy has finished (an event), so a copy
in flight never reads half-written inputs.

On the CPU the same packing runs without pinning (tests use it to check the
packing against the plain path); a CPU runner does not stage at all."""
from __future__ import annotations

import numpy as np
import torch

_TORCH_DTYPES = {np.dtype(np.int64): torch.int64, np.dtype(np.int32): torch.int32}


class InputStaging:
    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.pinned = self.device.type == "cuda"
        self._host: torch.Tensor | None = None
        self._device_buffer: torch.Tensor | None = None
        self._copied = None  # event recorded after the last copy (CUDA)

    def _reserve(self, elements: int) -> None:
        if self._host is not None and self._host.numel() >= elements:
            return
        size = max(elements, 2 * (0 if self._host is None else self._host.numel()), 1024)
        self._host = torch.empty(size, dtype=torch.int64, pin_memory=self.pinned)
        self._device_buffer = torch.empty(size, dtype=torch.int64, device=self.device)

    def to_device(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The arrays (int32 or int64, any shape) as tensors on the device,
        same names, shapes and dtypes."""
        for name, array in arrays.items():
            if array.dtype not in _TORCH_DTYPES:
                raise TypeError(f"input {name!r}: {array.dtype} is not int32 or int64")
        total = sum(array.size for array in arrays.values())
        if self._copied is not None:
            self._copied.synchronize()  # the previous copy has read the host buffer
        self._reserve(total)
        host = self._host[:total]
        flat = host.numpy()
        offset = 0
        for array in arrays.values():
            flat[offset:offset + array.size] = array.ravel()
            offset += array.size
        on_device = self._device_buffer[:total]
        on_device.copy_(host, non_blocking=self.pinned)
        if self.pinned:
            self._copied = torch.cuda.Event()
            self._copied.record()
        out: dict[str, torch.Tensor] = {}
        offset = 0
        for name, array in arrays.items():
            view = on_device[offset:offset + array.size].view(array.shape)
            dtype = _TORCH_DTYPES[array.dtype]
            out[name] = view if dtype == torch.int64 else view.to(dtype)
            offset += array.size
        return out
