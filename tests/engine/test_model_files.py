"""Malformed model files fail at once with one line naming the file: a
truncated or foreign file, absurd counts and shapes in a GGUF or
safetensors header, a config larger than its weights, a pickle that wants
to run code, a checkpoint that needs remote code."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest
import torch

from vllm.engine.arg_utils import EngineArgs
from vllm.transformers_utils.model_file_check import ModelFileError
from vllm.transformers_utils.model_resolver import default_model_path


def _fails_fast(path: str, needle: str, limit_s: float = 1.0) -> str:
    with pytest.raises(ModelFileError):  # once untimed: the first call's imports
        EngineArgs(model=str(path)).create_engine_config()
    start = time.monotonic()
    with pytest.raises(ModelFileError) as info:
        EngineArgs(model=str(path)).create_engine_config()
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert needle in message and "\n" not in message and str(path) in message, message
    assert elapsed < limit_s, f"{elapsed:.2f} s to refuse {path}"
    return message


# ------------------------------------------------------------ GGUF
def _gguf_header(n_tensors: int, n_kv: int, body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body


def _kv(key: str, value_type: int, payload: bytes) -> bytes:
    name = key.encode()
    return struct.pack("<Q", len(name)) + name + struct.pack("<I", value_type) + payload


def _tensor_info(name: str, dims: list[int], tensor_type: int, offset: int = 0) -> bytes:
    raw = name.encode()
    return (struct.pack("<Q", len(raw)) + raw + struct.pack("<I", len(dims))
            + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", tensor_type, offset))


GGUF_CASES = {
    "empty": (b"", "too short"),
    "wrong magic": (b"GGML" + bytes(100), "bad magic"),
    "version 99": (b"GGUF" + struct.pack("<IQQ", 99, 0, 0) + bytes(8), "version 99"),
    "absurd tensor count": (_gguf_header(1 << 60, 0, bytes(64)), "claims 1152921504606846976 tensors"),
    "absurd metadata count": (_gguf_header(0, 1 << 62, bytes(64)), "metadata entries"),
    "absurd array length": (_gguf_header(0, 1, _kv("a", 9, struct.pack("<IQ", 6, 1 << 61))),
                            "array items"),
    "absurd string array": (_gguf_header(0, 1, _kv("a", 9, struct.pack("<IQ", 8, 1 << 40)) + bytes(1 << 16)),
                            "strings"),
    "nested arrays": (_gguf_header(0, 1, _kv("a", 9, struct.pack("<IQ", 9, 1) * 40)),
                      "nested deeper"),
    "huge key length": (_gguf_header(0, 1, struct.pack("<Q", 1 << 62) + bytes(16)), "truncated"),
    "absurd dimensions": (_gguf_header(1, 0, b"\x01\x00\x00\x00\x00\x00\x00\x00t"
                                       + struct.pack("<I", 1 << 31) + bytes(64)),
                          "dimensions"),
    "absurd shape": (_gguf_header(1, 0, _tensor_info("t", [1 << 40, 1 << 40, 1 << 40], 0)),
                     "runs past the end"),
    "unknown tensor type": (_gguf_header(1, 0, _tensor_info("t", [32], 999)), "unknown type 999"),
    "zero alignment": (_gguf_header(0, 1, _kv("general.alignment", 4, struct.pack("<I", 0))),
                       "not a power of two"),
}


@pytest.mark.parametrize("case", sorted(GGUF_CASES))
def test_malformed_gguf_headers_fail_in_one_line(tmp_path, case):
    data, needle = GGUF_CASES[case]
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    _fails_fast(path, needle)


@pytest.mark.parametrize("fraction", [0.0001, 0.01, 0.3, 0.9, 0.9999])
def test_truncated_gguf_fails_in_one_line(tmp_path, fraction):
    source = default_model_path()
    size = os.path.getsize(source)
    path = tmp_path / "cut.gguf"
    with open(source, "rb") as f, open(path, "wb") as out:
        out.write(f.read(int(size * fraction)))
    _fails_fast(path, "truncated" if fraction < 0.05 else "runs past the end of the file")


# ------------------------------------------------------------ safetensors
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from tests.engine.quant_checkpoints import random_llama
    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    tokenizer = load_gguf_tokenizer(default_model_path())
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = random_llama(tokenizer, hidden=64, intermediate=128)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _copy(tiny_llama, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    return folder, folder / "model.safetensors"


def _rewrite_header(path, change) -> None:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    change(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])


def _first_tensor(header) -> dict:
    return header[next(k for k in header if k != "__metadata__")]


SAFETENSORS_CASES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]),
                  "outside the file"),
    "cut in the header": (lambda p: p.write_bytes(p.read_bytes()[:100]), "header claims"),
    "tiny": (lambda p: p.write_bytes(b"\x01\x02"), "no header"),
    "header length absurd": (lambda p: p.write_bytes(struct.pack("<Q", 1 << 62)
                                                     + p.read_bytes()[8:]), "header claims"),
    "header not json": (lambda p: p.write_bytes(struct.pack("<Q", 8) + b"{{{{{{{{"
                                                + p.read_bytes()[16:]), "not valid JSON"),
    "offsets past the end": (lambda p: _rewrite_header(
        p, lambda h: _first_tensor(h).update(data_offsets=[0, 1 << 50])), "outside the file"),
    "shape unlike its bytes": (lambda p: _rewrite_header(
        p, lambda h: _first_tensor(h).update(shape=[1 << 30, 1 << 30])), "does not match"),
    "negative shape": (lambda p: _rewrite_header(
        p, lambda h: _first_tensor(h).update(shape=[-1])), "invalid shape"),
    "unknown dtype": (lambda p: _rewrite_header(
        p, lambda h: _first_tensor(h).update(dtype="Q4")), "unknown dtype"),
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_malformed_safetensors_fail_in_one_line(tiny_llama, tmp_path, case):
    folder, weights = _copy(tiny_llama, tmp_path)
    corrupt, needle = SAFETENSORS_CASES[case]
    corrupt(weights)
    assert str(weights) in _fails_fast(folder, needle)  # before the tokenizer loads


def test_safetensors_checks_guard_the_loader_too(tiny_llama, tmp_path):
    # The weight iterator checks each file again (a file may change between
    # the configuration and the load): here it is cut after the config check.
    from vllm.model_executor.model_loader.loader import _iterate_safetensors
    _, weights = _copy(tiny_llama, tmp_path)
    weights.write_bytes(weights.read_bytes()[:len(weights.read_bytes()) // 2])
    with pytest.raises(ModelFileError, match="outside the file"):
        next(_iterate_safetensors([str(weights)]))


def test_config_larger_than_its_weights_is_refused_before_allocating(tiny_llama, tmp_path):
    folder, _ = _copy(tiny_llama, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_size=1 << 20, intermediate_size=1 << 22)  # ~TBs of weights
    (folder / "config.json").write_text(json.dumps(config))
    _fails_fast(folder, "the config describes a model of at least", limit_s=3)


class _OpensAFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_bin_checkpoint_that_would_run_code_is_refused(tiny_llama, tmp_path):
    from vllm import LLM
    folder, weights = _copy(tiny_llama, tmp_path)
    marker = tmp_path / "pwned"
    # big enough for the config's floor: the pickle itself is what is refused
    state = {"model.embed_tokens.weight": torch.zeros(1024, 1024),
             "x": _OpensAFile(str(marker))}
    weights.unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelFileError, match="not a loadable weights-only checkpoint"):
        LLM(model=str(folder), dtype="float32")
    assert not marker.exists()


def test_remote_code_models_are_refused(tiny_llama, tmp_path):
    folder, _ = _copy(tiny_llama, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my_custom_llama",
                  auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                            "AutoModelForCausalLM": "modeling_custom.CustomModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_custom.py").write_text(
        f"open({str(tmp_path / 'pwned')!r}, 'w')\n")
    for trust in (False, True):
        with pytest.raises(ModelFileError, match="runs no remote code"):
            EngineArgs(model=str(folder), trust_remote_code=trust).create_engine_config()
    assert not (tmp_path / "pwned").exists()


def test_cli_reports_a_bad_file_in_one_line(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGML" + bytes(100))
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "vllm"), "serve",
                          str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[-1] == f"vllm serve: error: {path} is not a GGUF file (bad magic)", out.stderr
    assert "Traceback" not in out.stderr
