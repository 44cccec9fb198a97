"""Our GGUF reader against the `gguf` package's own reader: same metadata,
same tensor table, same bytes; and clear errors on damaged files."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from vllm.transformers_utils.gguf_reader import GGUFError, GGUFFile, StringArray
from vllm.transformers_utils.model_resolver import default_model_path


def _assert_same_as_gguf_package(path: str) -> None:
    ours = GGUFFile(path)
    theirs = gguf.GGUFReader(path)
    keys = [k for k in theirs.fields if not k.startswith("GGUF.")]  # their pseudo-fields
    assert sorted(keys) == sorted(ours.fields)
    for key in keys:
        field, value = theirs.fields[key], ours.fields[key]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert len(value) == len(field.data), key
            if field.types[-1] == gguf.GGUFValueType.STRING:
                assert isinstance(value, StringArray), key
            else:
                np.testing.assert_array_equal(np.asarray(value), np.asarray(field.contents()))
        else:
            assert value == field.contents(), key
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for mine, ref in zip(ours.tensors, theirs.tensors):
        assert mine.tensor_type == ref.tensor_type, mine.name
        assert mine.shape == tuple(int(d) for d in ref.shape), mine.name
        assert mine.data.shape == ref.data.shape and mine.data.dtype == ref.data.dtype
        assert np.array_equal(mine.data.view(np.uint8), np.asarray(ref.data).view(np.uint8))


def test_embedded_model_reads_as_the_gguf_package_reads_it():
    _assert_same_as_gguf_package(default_model_path())


def _write_small_gguf(path, rng) -> dict[str, np.ndarray]:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.block_count", 2)
    writer.add_float32("llama.rope.freq_base", 12345.5)
    writer.add_string("general.name", "tiny ü")
    writer.add_bool("flag", True)
    writer.add_array("tokenizer.ggml.tokens", ["a", "bb", "<s>", "ü"])
    writer.add_array("tokenizer.ggml.scores", [0.5, 1.5, -2.0, 3.0])
    tensors = {"a.weight": rng.standard_normal((3, 64)).astype(np.float32),
               "b.weight": rng.standard_normal((5,)).astype(np.float16)}
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    q8 = rng.standard_normal((4, 64)).astype(np.float32)
    quantized = gguf.quants.quantize(q8, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("c.weight", quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    tensors["c.weight"] = gguf.quants.dequantize(quantized, gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def test_written_file_round_trips(tmp_path):
    rng = np.random.default_rng()
    path = tmp_path / "tiny.gguf"
    expected = _write_small_gguf(path, rng)
    _assert_same_as_gguf_package(str(path))
    ours = GGUFFile(str(path))
    assert ours.get("llama.rope.freq_base") == pytest.approx(12345.5)
    assert ours.get("general.name") == "tiny ü" and ours.get("flag") is True
    assert len(ours.get("tokenizer.ggml.tokens")) == 4
    for tensor in ours.tensors:
        values = gguf.quants.dequantize(tensor.data, gguf.GGMLQuantizationType(tensor.tensor_type))
        np.testing.assert_array_equal(values, expected[tensor.name])


def test_damaged_files_are_clear_errors(tmp_path):
    path = tmp_path / "tiny.gguf"
    _write_small_gguf(path, np.random.default_rng())
    data = path.read_bytes()
    bad_magic = tmp_path / "magic.gguf"
    bad_magic.write_bytes(b"GGUX" + data[4:])
    with pytest.raises(GGUFError, match="not a GGUF file"):
        GGUFFile(str(bad_magic))
    for cut in (40, 120, 200, len(data) - 40):  # header, kv, arrays, tensor data
        short = tmp_path / f"short{cut}.gguf"
        short.write_bytes(data[:cut])
        with pytest.raises(GGUFError, match="truncated|past the end"):
            GGUFFile(str(short))
