"""Checks that make a malformed model file fail at once, in one line.

Model files are trusted not to be malicious code (no pickle is loaded
without weights_only, no remote code runs), but a truncated download or a
corrupted header must not turn into a crash, a hang or a giant allocation.
Here: a safetensors header is validated against the file before any tensor
is mapped; and a config whose sizes the weight files cannot possibly hold
(a bogus hidden size in a GGUF header, say) is refused before the model is
allocated."""
from __future__ import annotations

import json
import math
import os
import struct

_SAFETENSORS_MAX_HEADER = 100 << 20  # the format's own limit
_SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
                         "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4,
                         "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


class ModelFileError(ValueError):
    """A model file that cannot be what it claims (message names the file)."""


def check_safetensors(path: str) -> None:
    """Validate a .safetensors file's header against its size."""
    size = os.path.getsize(path)
    if size < 8:
        raise ModelFileError(f"{path}: not a safetensors file ({size} bytes, no header)")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > min(_SAFETENSORS_MAX_HEADER, size - 8):
            raise ModelFileError(f"{path}: safetensors header claims {header_len} bytes, "
                                 f"the file has {size - 8} after its length field "
                                 "(truncated or not a safetensors file)")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelFileError(f"{path}: the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the safetensors header is not a JSON object")
    data_bytes = size - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        _check_safetensors_entry(path, name, info, data_bytes)


def _check_safetensors_entry(path: str, name: str, info, data_bytes: int) -> None:
    bad = f"{path}: tensor {name[:200]!r}"
    if not isinstance(info, dict):
        raise ModelFileError(f"{bad} has no dtype/shape/data_offsets entry")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _SAFETENSORS_ITEMSIZE:
        raise ModelFileError(f"{bad} has unknown dtype {str(dtype)[:20]!r}")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ModelFileError(f"{bad} has an invalid shape")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes):
        raise ModelFileError(f"{bad} lies outside the file's {data_bytes} data bytes "
                             "(truncated file?)")
    if math.prod(shape) * _SAFETENSORS_ITEMSIZE[dtype] != offsets[1] - offsets[0]:
        raise ModelFileError(f"{bad}: shape {shape} of {dtype} does not match its "
                             f"{offsets[1] - offsets[0]} bytes")


def _fewest_bytes(hf_config) -> int | None:
    """A floor on the bytes any checkpoint of this config holds: the
    embedding (or LM head) plus each layer's attention output projection,
    at 2 bits a weight (below every supported quantization)."""
    try:
        hidden = int(hf_config.hidden_size)
        layers = int(hf_config.num_hidden_layers)
        vocab = int(hf_config.vocab_size)
    except (AttributeError, TypeError, ValueError):
        return None
    if min(hidden, layers, vocab) <= 0:
        raise ModelFileError(f"the model config has a non-positive size (hidden_size={hidden}, "
                             f"num_hidden_layers={layers}, vocab_size={vocab})")
    return (vocab * hidden + layers * hidden * hidden) // 4


def check_config_fits_files(hf_config, files: list[str], where: str) -> None:
    """Refuse a config whose weights could not fit in files, before the
    model (sized by the config) is allocated."""
    floor = _fewest_bytes(hf_config)
    if floor is None or not files:
        return
    held = sum(os.path.getsize(f) for f in files)
    if floor > held:
        raise ModelFileError(
            f"{where}: the config describes a model of at least {floor / 1e9:.2f} GB of "
            f"weights (hidden_size={hf_config.hidden_size}, num_hidden_layers="
            f"{hf_config.num_hidden_layers}, vocab_size={hf_config.vocab_size}) but the "
            f"weight files hold {held / 1e9:.2f} GB: the config or the files are corrupt")


def refuse_remote_code(folder: str) -> None:
    """A checkpoint whose config needs its own Python code (auto_map to a
    model type transformers does not know) is refused: this engine runs no
    remote code, whatever trust_remote_code says."""
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return  # transformers reports a missing or broken config itself
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not auto_map:
        return
    from transformers import CONFIG_MAPPING
    if config.get("model_type") in CONFIG_MAPPING:
        return  # transformers has the class: its own code is used, not the checkpoint's
    raise ModelFileError(
        f"{folder} needs remote code (config.json maps {', '.join(sorted(auto_map))} to the "
        f"checkpoint's own Python files, model_type {config.get('model_type')!r}); this "
        "engine runs no remote code: use a checkpoint of an architecture it supports")
