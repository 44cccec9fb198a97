"""A GGUF reader that parses only what loading needs: scalar metadata and the
tensor table, with tensor data as views of one memory map.

The `gguf` package's GGUFReader builds a numpy object for every part of every
field; on a model with a 49k-token vocabulary that is ~1.2 M memmap slices
and ~4 s of start-up. String arrays (the vocabulary, the merges) are skipped
here, keeping only their length: the tokenizer is converted by transformers
once and cached (see gguf_file.load_gguf_tokenizer)."""
from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from vllm.transformers_utils.model_file_check import ModelFileError

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32

# GGUF metadata value types -> struct format of one scalar
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_ARRAY_NESTING = 4
# fewest bytes one entry takes, to refuse counts the file cannot hold
# before looping over them: a key/value (key length, key, value type), a
# tensor-table row (name length, n_dims, one dim, type, offset)
_MIN_KV_BYTES, _MIN_TENSOR_BYTES = 8 + 4, 8 + 4 + 8 + 4 + 8


@dataclass(frozen=True)
class StringArray:
    """A metadata array of strings, left unread: only its length is kept."""
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # GGUF order: innermost (row length) first
    tensor_type: int        # gguf.GGMLQuantizationType value
    data: np.ndarray        # rows of raw bytes, or typed values for F32/F16


class GGUFError(ModelFileError):
    pass


class GGUFFile:
    def __init__(self, path: str) -> None:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        self.path = path
        if os.path.getsize(path) < len(_MAGIC) + 4 + 8 + 8:
            raise GGUFError(f"{path} is not a GGUF file (too short for a GGUF header)")
        with open(path, "rb") as f:
            self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._map = np.frombuffer(self._buf, dtype=np.uint8)
        if self._buf[:4] != _MAGIC:
            raise GGUFError(f"{path} is not a GGUF file (bad magic)")
        self._pos = len(_MAGIC)
        version, n_tensors, n_kv = self._unpack("<IQQ")
        if version not in (2, 3):
            raise GGUFError(f"{path}: GGUF version {version} is not supported (need 2 or 3)")
        self.version = version
        self._check_count(n_kv, _MIN_KV_BYTES, "metadata entries")
        self._check_count(n_tensors, _MIN_TENSOR_BYTES, "tensors")
        self.fields: dict[str, object] = {}
        for _ in range(n_kv):
            key = self._string()
            (value_type,) = self._unpack("<I")
            self.fields[key] = self._value(value_type)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            (n_dims,) = self._unpack("<I")
            if not 1 <= n_dims <= _MAX_DIMS:
                raise GGUFError(f"{path}: tensor {name[:100]!r} has {n_dims} dimensions "
                                f"(GGUF allows 1 to {_MAX_DIMS})")
            dims = self._unpack(f"<{n_dims}Q")
            tensor_type, offset = self._unpack("<IQ")
            infos.append((name, tuple(int(d) for d in dims), tensor_type, offset))
        alignment = self.fields.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
            raise GGUFError(f"{path}: general.alignment {alignment!r} is not a power of two")
        data_start = -(-self._pos // alignment) * alignment
        self.tensors: list[GGUFTensor] = []
        for name, dims, tensor_type, offset in infos:
            try:
                qtype = GGMLQuantizationType(tensor_type)
                block, block_bytes = GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise GGUFError(f"{path}: tensor {name[:100]!r} has unknown type "
                                f"{tensor_type}") from None
            row = dims[0]
            rows = math.prod(dims[1:])  # exact: a bogus shape cannot wrap around
            if row % block:
                raise GGUFError(f"{path}: tensor {name} row of {row} is not a whole "
                                f"number of {qtype.name} blocks")
            row_bytes = row // block * block_bytes
            start = data_start + offset
            if start + rows * row_bytes > len(self._buf):
                raise GGUFError(f"{path}: tensor {name} runs past the end of the file "
                                "(truncated?)")
            raw = self._map[start:start + rows * row_bytes]
            # numpy order (outermost first), rows of bytes innermost
            raw = raw.reshape(*reversed(dims[1:]), row_bytes)
            # The layout gguf.quants.dequantize expects: typed values for plain
            # float types, rows of block bytes for everything else.
            if qtype == GGMLQuantizationType.F32:
                raw = raw.view(np.float32)
            elif qtype == GGMLQuantizationType.F16:
                raw = raw.view(np.float16)
            self.tensors.append(GGUFTensor(name, dims, tensor_type, raw))

    def get(self, key: str, default=None):
        return self.fields.get(key, default)

    # -- parsing ------------------------------------------------------------
    def _check_count(self, count: int, min_bytes: int, what: str) -> None:
        """Refuse a count of entries the rest of the file cannot hold, before
        looping over it (a bogus count would otherwise spin or allocate)."""
        left = len(self._buf) - self._pos
        if count * min_bytes > left:
            raise GGUFError(f"{self.path}: the header claims {count} {what}, more than its "
                            f"remaining {left} bytes can hold (truncated or corrupt)")

    def _unpack(self, fmt: str) -> tuple:
        try:
            values = struct.unpack_from(fmt, self._buf, self._pos)
        except struct.error as exc:
            raise GGUFError(f"{self.path}: truncated GGUF header") from exc
        self._pos += struct.calcsize(fmt)
        return values

    def _string(self) -> str:
        (length,) = self._unpack("<Q")
        end = self._pos + length
        if end > len(self._buf):
            raise GGUFError(f"{self.path}: truncated GGUF header")
        text = self._buf[self._pos:end].decode("utf-8", errors="replace")
        self._pos = end
        return text

    def _value(self, value_type: int, depth: int = 0):
        if value_type in _SCALARS:
            return self._unpack(_SCALARS[value_type])[0]
        if value_type == _STRING:
            return self._string()
        if value_type != _ARRAY:
            raise GGUFError(f"{self.path}: unknown GGUF value type {value_type}")
        item_type, count = self._unpack("<IQ")
        if item_type in _NUMPY:
            dtype = np.dtype(_NUMPY[item_type]).newbyteorder("<")
            self._check_count(count, dtype.itemsize, "array items")
            values = np.frombuffer(self._buf, dtype=dtype, count=count, offset=self._pos)
            self._pos += count * dtype.itemsize
            return values
        if item_type == _STRING:
            self._check_count(count, 8, "strings")
            skip = struct.Struct("<Q").unpack_from
            buf, pos = self._buf, self._pos
            try:
                for _ in range(count):  # skip: only the count is kept
                    pos += 8 + skip(buf, pos)[0]
            except struct.error as exc:
                raise GGUFError(f"{self.path}: truncated GGUF header") from exc
            if pos > len(buf):
                raise GGUFError(f"{self.path}: truncated GGUF header")
            self._pos = pos
            return StringArray(count)
        self._check_count(count, 4 if item_type != _ARRAY else 12, "array items")
        if depth >= _MAX_ARRAY_NESTING:
            raise GGUFError(f"{self.path}: metadata arrays nested deeper than "
                            f"{_MAX_ARRAY_NESTING}")
        # nested arrays: rare, small
        return [self._value(item_type, depth + 1) for _ in range(count)]
