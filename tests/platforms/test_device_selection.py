"""vllm.platforms.resolve_device: device="auto" | "cpu" | "cuda" against what
the build compiled and what torch sees (given as facts: every case runs on
any machine), one clear error per impossible choice; and the engine's own
answer on this machine."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from vllm.platforms import DeviceFacts, resolve_device

CPU_BUILD = DeviceFacts(build_target="cpu", version="0.1.0+cpu", torch_version="2.13.0+cpu",
                        torch_cuda=None, torch_hip=None, gpus=0)
CUDA_BUILD = DeviceFacts(build_target="cuda", version="0.1.0+cu130",
                         torch_version="2.14.1+cu130", torch_cuda="13.0", torch_hip=None,
                         gpus=1)
ROCM_BUILD = DeviceFacts(build_target="rocm", version="0.1.0+rocm63",
                         torch_version="2.14.1+rocm6.3", torch_cuda=None, torch_hip="6.3",
                         gpus=2)


def facts(base: DeviceFacts, **changes) -> DeviceFacts:
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("requested,base,kind", [
    ("auto", CPU_BUILD, "cpu"),
    ("cpu", CPU_BUILD, "cpu"),
    ("auto", facts(CPU_BUILD, gpus=1), "cpu"),  # a GPU, but CPU kernels only
    ("auto", CUDA_BUILD, "cuda"),
    ("cuda", CUDA_BUILD, "cuda"),
    ("CUDA", CUDA_BUILD, "cuda"),
    ("auto", ROCM_BUILD, "cuda"),  # torch calls HIP devices "cuda"
])
def test_possible_choices(requested, base, kind):
    choice = resolve_device(requested, base)
    assert choice.kind == kind
    assert choice.rocm == (base is ROCM_BUILD)
    assert base.version in choice.reason


def test_auto_on_a_cpu_build_with_a_gpu_says_how_to_use_it():
    reason = resolve_device("auto", facts(CPU_BUILD, gpus=2)).reason
    assert "2 GPU(s)" in reason and "VLLM_TARGET_DEVICE=cuda" in reason


@pytest.mark.parametrize("requested,base,needles", [
    ("cuda", CPU_BUILD, ["0.1.0+cpu", "none for GPUs", "VLLM_TARGET_DEVICE=cuda pip install ."]),
    ("cuda", facts(CUDA_BUILD, gpus=0, visible_devices=""),
     ["0.1.0+cu130", "torch 2.14.1+cu130 (CUDA 13.0, CUDA_VISIBLE_DEVICES='') sees no GPU"]),
    ("auto", facts(CUDA_BUILD, gpus=0), ["sees no GPU"]),
    ("cpu", CUDA_BUILD, ["no CPU kernels", "VLLM_TARGET_DEVICE=cpu pip install ."]),
    ("auto", facts(CPU_BUILD, build_target=""), ["`pip install .` compiles them"]),
    ("tpu", CPU_BUILD, ["vLLM device this engine has no kernels for", "auto, cpu, cuda"]),
    ("gpu", CPU_BUILD, ["'gpu' is not one of: auto, cpu, cuda"]),
])
def test_impossible_choices_say_why(requested, base, needles):
    with pytest.raises(ValueError) as error:
        resolve_device(requested, base)
    for needle in needles:
        assert needle in str(error.value)


def test_this_machine():
    import vllm
    facts_here = DeviceFacts.detect()
    assert facts_here.build_target == vllm.build_info()["target_device"]
    assert facts_here.gpus == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if facts_here.build_target == "cpu":
        assert resolve_device("auto").kind == "cpu"


@pytest.mark.parametrize("kwargs,needle", [
    (dict(device="cuda"), "device 'cuda'"),
    (dict(gpu_memory_utilization=1.5), "gpu_memory_utilization must be in (0, 1], got 1.5"),
    (dict(gpu_memory_utilization=0), "gpu_memory_utilization must be in (0, 1], got 0"),
    (dict(swap_space=-1), "swap_space must be at least 0 GiB"),
])
def test_engine_refuses_with_one_clear_error(kwargs, needle):
    from vllm.engine.arg_utils import EngineArgs
    with pytest.raises(ValueError) as error:
        EngineArgs(load_format="dummy", max_model_len=64, **kwargs).create_engine_config()
    assert needle in str(error.value)


def test_vllm_gpu_arguments_are_accepted_on_cpu(monkeypatch):
    # a vLLM script's GPU knobs within their ranges: accepted (unused here)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM
    llm = LLM(load_format="dummy", max_model_len=64, gpu_memory_utilization=0.5,
              enforce_eager=True, swap_space=0, device="auto")
    assert llm.llm_engine.model_config.max_model_len == 64
