"""Files the project writes land under the configured roots: the converted
GGUF tokenizer under VLLM_CACHE_ROOT (and is reused from there), usage
records under VLLM_CONFIG_ROOT (tests/operations/test_usage_stats.py),
function traces under VLLM_CACHE_ROOT (test_logging_and_tracing.py)."""
from __future__ import annotations

from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
from vllm.transformers_utils.model_resolver import default_model_path


def test_gguf_tokenizer_is_cached_under_vllm_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path))
    first = load_gguf_tokenizer(default_model_path())
    cached = list((tmp_path / "gguf_tokenizers").glob("*/tokenizer.json"))
    assert len(cached) == 1
    # the second load must come from the cache, not from converting the GGUF again
    from transformers import AutoTokenizer
    original = AutoTokenizer.from_pretrained.__func__

    def no_conversion(cls, *args, **kwargs):
        assert "gguf_file" not in kwargs, "converted the GGUF vocabulary again"
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", classmethod(no_conversion))
    second = load_gguf_tokenizer(default_model_path())
    text = "Hello, wörld! 🎉"
    assert first(text).input_ids == second(text).input_ids
    assert second.chat_template == first.chat_template and first.chat_template
