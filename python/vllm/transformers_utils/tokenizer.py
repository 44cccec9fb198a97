"""Loading the tokenizer of a resolved model (folder or GGUF file)."""
from __future__ import annotations

from vllm.transformers_utils.model_resolver import ResolvedModel


def get_tokenizer(model: ResolvedModel, tokenizer: str | None = None,
                  revision: str | None = None):
    from transformers import AutoTokenizer
    if tokenizer is not None:
        from vllm.transformers_utils.model_resolver import resolve_model
        model = resolve_model(tokenizer, revision)
    if model.is_gguf:
        from vllm.transformers_utils.gguf_file import load_gguf_tokenizer
        return load_gguf_tokenizer(model.path)
    return AutoTokenizer.from_pretrained(model.path)


def stop_token_ids_of(hf_config, tokenizer) -> set[int]:
    """End-of-sequence ids beyond the tokenizer's own EOS (e.g. Llama 3's
    <|eot_id|>), from the model config: generation stops on these too."""
    ids = getattr(hf_config, "eos_token_id", None)
    ids = set(ids if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else []))
    ids.discard(tokenizer.eos_token_id)
    return ids
