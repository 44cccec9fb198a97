"""Which device the engine runs on: vLLM's `device` ("auto", "cpu", "cuda";
`--device`), decided from what this build compiled (vllm/_build_info.json:
the kernels of one device kind) and what torch sees, with one clear error
for each impossible choice. ROCm builds run through the CUDA path (torch
calls HIP devices "cuda")."""
from __future__ import annotations

from dataclasses import dataclass

DEVICES = ("auto", "cpu", "cuda")
# vLLM devices this engine has no kernels for
OTHER_VLLM_DEVICES = ("neuron", "tpu", "xpu", "hpu", "openvino")


@dataclass(frozen=True)
class DeviceFacts:
    """What the choice depends on; `detect()` reads them, tests give them."""
    build_target: str  # the build's VLLM_TARGET_DEVICE: cpu, cuda, rocm ("" unbuilt)
    version: str  # this package's version (its suffix names the build)
    torch_version: str
    torch_cuda: str | None  # torch.version.cuda
    torch_hip: str | None  # torch.version.hip
    gpus: int  # devices torch can use
    visible_devices: str | None = None  # CUDA_VISIBLE_DEVICES, for the message

    @classmethod
    def detect(cls) -> "DeviceFacts":
        import torch

        import vllm
        from vllm import envs
        info = vllm.build_info()
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return cls(build_target=info.get("target_device", ""), version=vllm.__version__,
                   torch_version=torch.__version__, torch_cuda=torch.version.cuda,
                   torch_hip=getattr(torch.version, "hip", None), gpus=gpus,
                   visible_devices=envs.CUDA_VISIBLE_DEVICES)

    @property
    def has_gpu_kernels(self) -> bool:
        return self.build_target in ("cuda", "rocm")

    def no_gpu_reason(self) -> str:
        toolkit = (f"CUDA {self.torch_cuda}" if self.torch_cuda else
                   f"HIP {self.torch_hip}" if self.torch_hip else "no GPU support")
        visible = ("" if self.visible_devices is None
                   else f", CUDA_VISIBLE_DEVICES={self.visible_devices!r}")
        return f"torch {self.torch_version} ({toolkit}{visible}) sees no GPU"


@dataclass(frozen=True)
class DeviceChoice:
    kind: str  # "cpu" or "cuda"
    reason: str  # why, for the start-up log
    rocm: bool = False


def resolve_device(requested: str, facts: DeviceFacts | None = None) -> DeviceChoice:
    """The device `requested` means here; ValueError naming the fix when it
    cannot be."""
    name = (requested or "auto").strip().lower()
    if name not in DEVICES:
        if name in OTHER_VLLM_DEVICES:
            raise ValueError(f"device {requested!r} is a vLLM device this engine has no "
                             f"kernels for; choose one of: {', '.join(DEVICES)}")
        raise ValueError(f"device {requested!r} is not one of: {', '.join(DEVICES)}")
    facts = facts or DeviceFacts.detect()
    built = facts.build_target or "no device (a source tree never built)"
    gpu_build = facts.has_gpu_kernels
    if name == "cpu" or (name == "auto" and not gpu_build):
        if gpu_build:
            raise ValueError(f"device {requested!r}: this build ({facts.version}) has "
                             f"{facts.build_target} kernels and no CPU kernels; install a CPU "
                             "build (VLLM_TARGET_DEVICE=cpu pip install .) to run on the CPU")
        if facts.build_target != "cpu":
            raise ValueError(f"device {requested!r}: this package has kernels for {built}; "
                             "`pip install .` compiles them")
        reason = f"this build ({facts.version}) has CPU kernels"
        if name == "auto" and facts.gpus:
            reason += (f"; torch also sees {facts.gpus} GPU(s), which need a CUDA build "
                       "(VLLM_TARGET_DEVICE=cuda pip install .)")
        return DeviceChoice("cpu", reason)
    # cuda, or auto on a GPU build
    if not gpu_build:
        raise ValueError(f"device {requested!r}: this build ({facts.version}) has kernels for "
                         f"{built}, none for GPUs; install a CUDA build (VLLM_TARGET_DEVICE=cuda "
                         "pip install ., with a CUDA torch and nvcc)")
    if facts.gpus == 0:
        raise ValueError(f"device {requested!r}: this build ({facts.version}) has "
                         f"{facts.build_target} kernels, but {facts.no_gpu_reason()}")
    return DeviceChoice("cuda", f"this build ({facts.version}) has {facts.build_target} "
                                f"kernels and torch sees {facts.gpus} GPU(s)",
                        rocm=facts.build_target == "rocm")
