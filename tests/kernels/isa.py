"""Run a test once per CPU kernel variant this machine supports (the AVX2
and scalar paths are forced explicitly, so CI covers them on AVX-512 hosts)."""
from __future__ import annotations

import pytest

from vllm import _custom_ops as ops


def supported_isas() -> list[str]:
    if ops._C is None or not hasattr(ops._C, "supported_cpu_isas"):
        return []
    return ops._C.supported_cpu_isas().split(",")


@pytest.fixture(params=supported_isas() or ["none"])
def cpu_isa(request):
    if request.param == "none":
        pytest.skip("no CPU kernels in this build")
    ops._C.set_cpu_isa(request.param)
    assert ops.cpu_isa() == request.param
    yield request.param
    ops._C.set_cpu_isa("auto")
