"""Run a test once per CPU kernel variant this machine supports (the AVX2
and scalar paths are forced explicitly, so CI covers them on AVX-512 hosts).

Each switch restores the variant that was active before (not "auto"), so a
run forced to one variant (VLLM_CPU_ISA=avx2) stays on it between tests."""
from __future__ import annotations

import contextlib

import pytest

from vllm import _custom_ops as ops


def supported_isas() -> list[str]:
    if ops._C is None or not hasattr(ops._C, "supported_cpu_isas"):
        return []
    return ops._C.supported_cpu_isas().split(",")


@contextlib.contextmanager
def active_isa(isa: str):
    """The kernel variant `isa` for the duration, then the previous one."""
    previous = ops.cpu_isa()
    ops._C.set_cpu_isa(isa)
    try:
        assert ops.cpu_isa() == isa
        yield isa
    finally:
        ops._C.set_cpu_isa(previous)


def packed_linear_isas() -> list[str]:
    """The supported variants that have packed_linear (AVX512-BF16, AVX2)."""
    found = []
    for isa in supported_isas():
        with active_isa(isa):
            if ops.packed_linear_available():
                found.append(isa)
    return found


def without_packed_linear() -> str | None:
    """A supported variant without packed_linear (scalar), if any."""
    packed = packed_linear_isas()
    return next((isa for isa in supported_isas() if isa not in packed), None)


def _switch(request):
    if request.param == "none":
        pytest.skip("no CPU kernels (or none of this kind) in this build")
    with active_isa(request.param) as isa:
        yield isa


@pytest.fixture(params=supported_isas() or ["none"])
def cpu_isa(request):
    yield from _switch(request)


@pytest.fixture(params=packed_linear_isas() or ["none"])
def packed_isa(request):
    """Each variant with packed_linear, active for the test."""
    yield from _switch(request)
