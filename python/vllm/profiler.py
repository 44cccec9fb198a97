"""torch profiler traces on demand (VLLM_TORCH_PROFILER_DIR): start, then
stop writes a Chrome trace (open in Perfetto or chrome://tracing)."""
from __future__ import annotations

import logging
import os
import time

logger = logging.getLogger(__name__)


class TorchProfiler:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._profile = None

    def start(self) -> None:
        import torch
        if self._profile is not None:
            raise RuntimeError("the profiler is already running")
        os.makedirs(self.directory, exist_ok=True)
        logger.warning("torch profiler on: steps run slower until stop_profile")
        self._profile = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
        self._profile.__enter__()

    def stop(self) -> str:
        if self._profile is None:
            raise RuntimeError("the profiler is not running")
        profile, self._profile = self._profile, None
        profile.__exit__(None, None, None)
        path = os.path.join(self.directory,
                            f"trace-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}.json")
        profile.export_chrome_trace(path)
        logger.info("profiler trace written to %s", path)
        return path
