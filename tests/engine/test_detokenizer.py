"""Incremental detokenization never shows half a character and ends with the
same text as decoding everything at once."""
from __future__ import annotations

import pytest

from vllm.engine.detokenizer import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer():
    from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
    from vllm.transformers_utils.model_resolver import default_model_path
    return load_gguf_tokenizer(default_model_path())


@pytest.mark.parametrize("text", [
    "héllo wörld, ça va? 你好，世界！ 🎉🚀 naïve café",
    "   leading spaces and\ttabs\nnew lines",
    "emoji families 👨‍👩‍👧 and flags 🇫🇷 mixed with ascii",
])
def test_token_by_token_text_equals_full_decode(tokenizer, text):
    prompt = tokenizer("Say:").input_ids
    ids = tokenizer(text, add_special_tokens=False).input_ids
    detok = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens=True)
    pieces = [detok.add([t]) for t in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == detok.text == tokenizer.decode(ids, skip_special_tokens=True)


def test_character_split_over_tokens_appears_once_complete(tokenizer):
    ids = tokenizer("🎉", add_special_tokens=False).input_ids
    assert len(ids) > 1  # byte-level BPE splits this emoji's four bytes
    detok = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=True)
    pieces = [detok.add([t]) for t in ids]
    assert pieces == [""] * (len(ids) - 1) + ["🎉"]


def test_special_tokens_skipped_or_kept(tokenizer):
    ids = tokenizer("Hi", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    skip = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=True)
    keep = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=False)
    for t in ids:
        skip.add([t])
        keep.add([t])
    assert skip.text == "Hi" and keep.text == "Hi" + tokenizer.eos_token
