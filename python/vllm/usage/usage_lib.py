"""Usage statistics, as vLLM collects them.

One small JSON record per engine start: versions, platform, CPU model,
memory, the model's architecture and a few engine settings; never prompts,
outputs, model names or paths. It is appended to
VLLM_CONFIG_ROOT/usage_stats.json and posted once, from a daemon thread,
to VLLM_USAGE_STATS_SERVER with a short timeout and no retries, so a
slow or absent network never touches serving.

Off (nothing written, nothing sent) with VLLM_NO_USAGE_STATS=1,
VLLM_DO_NOT_TRACK=1, DO_NOT_TRACK=1, or a file named do_not_track in
VLLM_CONFIG_ROOT."""
from __future__ import annotations

import datetime
import enum
import json
import logging
import os
import platform
import threading
import uuid

from vllm import envs

logger = logging.getLogger(__name__)

_TIMEOUT_S = 3.0


class UsageContext(str, enum.Enum):
    UNKNOWN_CONTEXT = "UNKNOWN_CONTEXT"
    LLM_CLASS = "LLM_CLASS"
    API_SERVER = "API_SERVER"
    OPENAI_API_SERVER = "OPENAI_API_SERVER"
    ENGINE_CONTEXT = "ENGINE_CONTEXT"


def is_usage_stats_enabled() -> bool:
    if envs.VLLM_NO_USAGE_STATS or envs.VLLM_DO_NOT_TRACK:
        return False
    return not os.path.exists(os.path.join(envs.VLLM_CONFIG_ROOT, "do_not_track"))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def build_record(context: UsageContext, model_architecture: str,
                 extra: dict | None = None) -> dict:
    import torch

    import vllm
    return {
        "uuid": str(uuid.uuid4()),  # per engine start; nothing ties starts together
        "log_time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "source": envs.VLLM_USAGE_SOURCE,
        "context": context.value,
        "vllm_version": vllm.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "architecture": platform.machine(),
        "cpu_type": _cpu_model(),
        "num_cpu": os.cpu_count(),
        "total_memory": _memory_bytes(),
        "gpu_count": 0,
        "gpu_type": None,
        "model_architecture": model_architecture,
        **(extra or {}),
    }


def usage_settings(vllm_config) -> dict:
    """The engine settings a usage record carries (no names, no paths)."""
    mc, cc, sc = vllm_config.model_config, vllm_config.cache_config, vllm_config.scheduler_config
    return {"dtype": str(mc.dtype).replace("torch.", ""), "max_model_len": mc.max_model_len,
            "load_format": mc.load_format, "quantized_gguf": mc.is_gguf,
            "block_size": cc.block_size, "enable_prefix_caching": cc.enable_prefix_caching,
            "max_num_seqs": sc.max_num_seqs,
            "max_num_batched_tokens": sc.max_num_batched_tokens,
            "enable_chunked_prefill": sc.enable_chunked_prefill}


def _write_and_send(record: dict) -> None:
    path = os.path.join(envs.VLLM_CONFIG_ROOT, "usage_stats.json")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as exc:
        logger.debug("could not write usage stats to %s: %s", path, exc)
    try:
        import urllib.request
        request = urllib.request.Request(
            envs.VLLM_USAGE_STATS_SERVER, data=json.dumps(record).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            response.read()
    except Exception as exc:  # one try only: no retry storm, never an error for the user
        logger.debug("usage stats not sent: %s", exc)


def report_usage(context: UsageContext, model_architecture: str,
                 extra: dict | None = None) -> threading.Thread | None:
    """Record and send one usage record in the background (if enabled)."""
    if not is_usage_stats_enabled():
        return None
    try:
        record = build_record(context, model_architecture, extra)
    except Exception as exc:  # collecting must never break the engine
        logger.debug("usage stats not collected: %s", exc)
        return None
    thread = threading.Thread(target=_write_and_send, args=(record,), name="vllm-usage-stats",
                              daemon=True)
    thread.start()
    return thread
