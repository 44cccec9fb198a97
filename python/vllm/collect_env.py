"""Print how this vllm was built and what it runs on (python -m vllm.collect_env)."""
from __future__ import annotations

import json
import platform
import sys


def collect() -> dict:
    import torch

    import vllm
    from vllm import _custom_ops
    from vllm._build_record import build_info

    runtime = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda_available": torch.cuda.is_available(),
        "cpu_isa_in_use": _custom_ops.cpu_isa(),
    }
    if _custom_ops._C is not None and hasattr(_custom_ops._C, "supported_cpu_isas"):
        runtime["cpu_isas_supported_here"] = _custom_ops._C.supported_cpu_isas()
    return {"vllm_version": vllm.__version__, "build": build_info(), "runtime": runtime}


def main() -> None:
    print(json.dumps(collect(), indent=2))


if __name__ == "__main__":
    main()
