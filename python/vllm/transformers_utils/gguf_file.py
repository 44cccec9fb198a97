"""Reading a GGUF file: the model config, the weights (dequantized, in Hugging
Face names and layout) and the tokenizer, so a GGUF checkpoint loads through
the same model code as a Hugging Face folder."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch

from vllm.transformers_utils.gguf_reader import GGUFFile

logger = logging.getLogger(__name__)

# GGUF architecture -> (Hugging Face architecture, model_type)
_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "mistral": ("MistralForCausalLM", "mistral"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
}

# GGUF tensor name (after "blk.N.") -> Hugging Face name (after "model.layers.N.")
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


@lru_cache(maxsize=4)
def _reader(path: str) -> GGUFFile:
    return GGUFFile(path)


def gguf_metadata(path: str) -> dict[str, object]:
    """The file's key/value metadata (general.*, <arch>.*, tokenizer.*)."""
    return _reader(path).fields


def gguf_architecture(path: str) -> str:
    arch = _reader(path).get("general.architecture")
    if arch not in _ARCHITECTURES:
        raise ValueError(f"GGUF file {path} holds a {arch!r} model; supported GGUF "
                         f"architectures: {', '.join(sorted(_ARCHITECTURES))}")
    return arch


def load_gguf_config(path: str):
    """A transformers PretrainedConfig built from the GGUF metadata."""
    from transformers import AutoConfig

    reader = _reader(path)
    arch = gguf_architecture(path)
    hf_arch, model_type = _ARCHITECTURES[arch]

    def meta(key, default=None):
        return reader.get(f"{arch}.{key}", default)

    num_heads = int(meta("attention.head_count"))
    hidden = int(meta("embedding_length"))
    tokens = reader.get("tokenizer.ggml.tokens")
    vocab = int(meta("vocab_size", len(tokens) if tokens is not None else 0))
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    head_dim = int(meta("attention.key_length", hidden // num_heads))
    kwargs = dict(
        architectures=[hf_arch],
        hidden_size=hidden,
        intermediate_size=int(meta("feed_forward_length")),
        num_hidden_layers=int(meta("block_count")),
        num_attention_heads=num_heads,
        num_key_value_heads=int(meta("attention.head_count_kv", num_heads)),
        max_position_embeddings=int(meta("context_length", 2048)),
        rms_norm_eps=float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(meta("rope.freq_base", 10000.0)),
        vocab_size=vocab,
        tie_word_embeddings=not has_output,
        bos_token_id=reader.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=reader.get("tokenizer.ggml.eos_token_id"),
        torch_dtype="float32",
    )
    if model_type != "qwen2":
        kwargs["head_dim"] = head_dim
    window = meta("attention.sliding_window")
    if window is not None:
        kwargs["sliding_window"] = int(window)
    return AutoConfig.for_model(model_type, **kwargs)


def _unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's converter interleaves the two rotary halves of each Llama
    q/k head (for its GPT-J style rotary); restore Hugging Face's NeoX order."""
    half = weight.shape[0] // num_heads // 2
    return (weight.reshape(num_heads, half, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def iterate_gguf_weights(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(Hugging Face name, float32 tensor) for every tensor in the file."""
    from gguf.quants import dequantize

    reader = _reader(path)
    arch = gguf_architecture(path)
    num_heads = int(reader.get(f"{arch}.attention.head_count"))
    num_kv_heads = int(reader.get(f"{arch}.attention.head_count_kv", num_heads))
    permuted = arch in ("llama", "mistral")
    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        suffix = parts[-1]  # weight / bias
        if parts[0] == "blk":
            layer, kind = parts[1], parts[2]
            if kind not in _LAYER_TENSORS:
                logger.debug("skipping GGUF tensor %s", tensor.name)
                continue
            name = f"model.layers.{layer}.{_LAYER_TENSORS[kind]}.{suffix}"
        elif parts[0] in _GLOBAL_TENSORS:
            kind = parts[0]
            name = f"{_GLOBAL_TENSORS[kind]}.{suffix}"
        else:
            logger.debug("skipping GGUF tensor %s", tensor.name)
            continue
        array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        if permuted and kind in ("attn_q", "attn_k"):
            array = _unpermute_rotary(array, num_heads if kind == "attn_q" else num_kv_heads)
        if not array.flags.writeable:  # F32 tensors come back as read-only file views
            array = array.copy()
        yield name, torch.from_numpy(np.ascontiguousarray(array))


def _tokenizer_cache_dir(path: str) -> str:
    from vllm import envs
    stat = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"
                         .encode()).hexdigest()[:16]
    return os.path.join(envs.VLLM_CACHE_ROOT, "gguf_tokenizers", key)


def load_gguf_tokenizer(path: str):
    """The tokenizer (with chat template) stored in a GGUF file.

    Converting the GGUF vocabulary takes seconds, so the converted tokenizer
    is saved once under VLLM_CACHE_ROOT and reloaded from there."""
    from transformers import AutoTokenizer

    cache_dir = _tokenizer_cache_dir(path)
    if os.path.isfile(os.path.join(cache_dir, "tokenizer.json")):
        try:
            return AutoTokenizer.from_pretrained(cache_dir)
        except Exception as exc:  # a damaged cache entry is rebuilt, not fatal
            logger.warning("ignoring cached GGUF tokenizer in %s: %s", cache_dir, exc)
    tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                              gguf_file=os.path.basename(path))
    try:
        tmp = f"{cache_dir}.tmp{os.getpid()}"
        tokenizer.save_pretrained(tmp)
        os.makedirs(os.path.dirname(cache_dir), exist_ok=True)
        os.replace(tmp, cache_dir)
    except OSError as exc:  # read-only cache, or another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
        logger.info("could not cache the GGUF tokenizer in %s: %s", cache_dir, exc)
    return tokenizer
