"""Checkpoints the GPU tests can make on a machine that has only torch and
transformers (a lent GPU machine has neither the embedded model's package
nor gguf): small random-initialised Llama-family models saved by
transformers, with a word-level tokenizer made by `tokenizers` itself."""
from __future__ import annotations

import torch

WORDS = [f"w{i}" for i in range(500)]


def save_word_tokenizer(folder) -> object:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)
    return tokenizer


ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(rope_theta=10000.0)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(rope_theta=1e6)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_theta=1e6, tie_word_embeddings=True)),
}


def save_random_model(arch: str, folder, hidden_size: int = 256, layers: int = 2,
                      heads: int = 4, kv_heads: int = 2) -> torch.nn.Module:
    """transformers' own random-initialised model of `arch` (fp32), saved
    with the word tokenizer; returns the model."""
    import transformers
    config_name, model_name, extra = ARCHS[arch]
    tokenizer = save_word_tokenizer(folder)
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, **extra)
    torch.manual_seed(sum(map(ord, arch)))
    model = getattr(transformers, model_name)(config).to(torch.float32)
    model.save_pretrained(folder)
    return model


def prompts(count: int, length: int = 12) -> list[list[int]]:
    """Token-id prompts of the word tokenizer's ids, different lengths."""
    generator = torch.Generator().manual_seed(count)
    return [torch.randint(3, 3 + len(WORDS), (length + i,), generator=generator).tolist()
            for i in range(count)]
