"""InputStaging packs a step's integer arrays into one buffer, copies it
once and hands out views: checked here on the CPU (no pinning) against the
arrays themselves, across steps that grow and shrink the buffer."""
import numpy as np
import pytest
import torch

from vllm.worker.input_staging import InputStaging


def _step(rng, tokens: int, seqs: int) -> dict[str, np.ndarray]:
    return {
        "input_ids": rng.integers(0, 50_000, tokens, dtype=np.int64),
        "positions": rng.integers(0, 4096, tokens, dtype=np.int64),
        "slot_mapping": rng.integers(-1, 1 << 40, tokens, dtype=np.int64),
        "query_start_loc": np.sort(rng.integers(0, tokens, seqs + 1)).astype(np.int32),
        "seq_lens": rng.integers(1, 4096, seqs, dtype=np.int32),
        "block_tables": rng.integers(0, 1 << 20, (seqs, 7), dtype=np.int32),
    }


def test_every_array_arrives_whole_through_one_buffer():
    staging = InputStaging(torch.device("cpu"))
    rng = np.random.default_rng(0)
    for tokens, seqs in [(5, 2), (3000, 40), (1, 1), (700, 9)]:  # grows, then reuses
        arrays = _step(rng, tokens, seqs)
        out = staging.to_device(arrays)
        assert list(out) == list(arrays)
        for name, array in arrays.items():
            tensor = out[name]
            assert tensor.dtype == (torch.int64 if array.dtype == np.int64 else torch.int32), name
            assert tuple(tensor.shape) == array.shape, name
            np.testing.assert_array_equal(tensor.numpy(), array, err_msg=name)
    # the later steps reused the buffer grown for the large one
    assert staging._host.numel() >= 3000 * 3 + 41 + 40 + 40 * 7


def test_other_dtypes_are_refused_by_name():
    staging = InputStaging(torch.device("cpu"))
    with pytest.raises(TypeError, match="'positions': float32 is not int32 or int64"):
        staging.to_device({"input_ids": np.zeros(3, dtype=np.int64),
                           "positions": np.zeros(3, dtype=np.float32)})
