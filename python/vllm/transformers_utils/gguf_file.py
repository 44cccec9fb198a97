"""Reading a GGUF file: the model config, the weights (in Hugging Face names
and layout: projections and embeddings of the block types our quantized
kernel reads as `QuantizedWeight`s, everything else dequantized) and the
tokenizer, so a GGUF checkpoint loads through the same model code as a
Hugging Face folder."""
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

# GGUF architecture -> (Hugging Face architecture, model_type); a "llama"
# file with experts is Mixtral
_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "mistral": ("MistralForCausalLM", "mistral"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen2moe": ("Qwen2MoeForCausalLM", "qwen2_moe"),
    "qwen3moe": ("Qwen3MoeForCausalLM", "qwen3_moe"),
    "olmoe": ("OlmoeForCausalLM", "olmoe"),
}
_MIXTRAL = ("MixtralForCausalLM", "mixtral")

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
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    # MoE: the router, Qwen2-MoE's shared expert and its gate
    "ffn_gate_inp": "{moe}.gate",
    "ffn_gate_shexp": "mlp.shared_expert.gate_proj",
    "ffn_up_shexp": "mlp.shared_expert.up_proj",
    "ffn_down_shexp": "mlp.shared_expert.down_proj",
    "ffn_gate_inp_shexp": "mlp.shared_expert_gate",
}
# GGUF's stacked experts [E, ...] -> each expert's projection (Mixtral's
# checkpoint names, everyone else's)
_EXPERT_TENSORS = {"ffn_gate_exps": ("w1", "gate_proj"), "ffn_up_exps": ("w3", "up_proj"),
                   "ffn_down_exps": ("w2", "down_proj")}
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


def _hf_architecture(path: str) -> tuple[str, str]:
    arch = gguf_architecture(path)
    if arch == "llama" and int(_reader(path).get("llama.expert_count", 0) or 0) > 0:
        return _MIXTRAL
    return _ARCHITECTURES[arch]


def _moe_config(model_type: str, meta) -> dict:
    """The config fields of the MoE families, from the <arch>.expert_* keys."""
    experts, used = int(meta("expert_count")), int(meta("expert_used_count"))
    expert_size = meta("expert_feed_forward_length")
    if model_type == "mixtral":
        return dict(num_local_experts=experts, num_experts_per_tok=used)
    fields = dict(num_experts=experts, num_experts_per_tok=used)
    if model_type == "olmoe":
        fields["intermediate_size"] = int(expert_size or meta("feed_forward_length"))
        fields["norm_topk_prob"] = False
    else:  # qwen2_moe, qwen3_moe: every layer sparse
        fields.update(moe_intermediate_size=int(expert_size), decoder_sparse_step=1,
                      mlp_only_layers=[], norm_topk_prob=model_type == "qwen3_moe")
        if model_type == "qwen2_moe":
            fields["shared_expert_intermediate_size"] = int(
                meta("expert_shared_feed_forward_length", 0) or 0)
    return fields


def load_gguf_config(path: str):
    """A transformers PretrainedConfig built from the GGUF metadata."""
    from transformers import AutoConfig

    reader = _reader(path)
    arch = gguf_architecture(path)
    hf_arch, model_type = _hf_architecture(path)

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
    if model_type not in ("qwen2", "qwen2_moe"):
        kwargs["head_dim"] = head_dim
    if meta("expert_count"):
        kwargs.update(_moe_config(model_type, meta))
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


def _rotary_row_order(rows: int, num_heads: int) -> np.ndarray:
    """The row order _unpermute_rotary gives, as indices into the rows."""
    return _unpermute_rotary(np.arange(rows), num_heads)


# Weights kept quantized: the projections, the embedding / LM head and the
# expert stacks (3-D, one QuantizedWeight per expert); norms and routers
# are dequantized
_QUANTIZABLE = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
                "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp", "token_embd", "output",
                "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"}
_warned_types: set[str] = set()


def _keep_quantized(tensor, kind: str) -> bool:
    from gguf import GGMLQuantizationType

    from vllm.model_executor.layers.quantization import gguf as gguf_quant

    if kind not in _QUANTIZABLE or len(tensor.shape) != (3 if kind in _EXPERT_TENSORS else 2):
        return False
    type_name = GGMLQuantizationType(tensor.tensor_type).name
    if type_name in ("F32", "F16", "BF16"):
        return False
    if gguf_quant.kernel_takes(type_name, int(tensor.shape[0])):
        return True
    if type_name not in _warned_types:
        _warned_types.add(type_name)
        logger.warning("GGUF %s weights (e.g. %s, rows of %d) are dequantized at load: our "
                       "quantized kernel reads %s with rows a multiple of 32",
                       type_name, tensor.name, int(tensor.shape[0]),
                       ", ".join(gguf_quant.SUPPORTED_TYPES))
    return False


def iterate_gguf_weights(path: str, quantized: bool = False) -> Iterator[tuple[str, object]]:
    """(Hugging Face name, tensor) for every tensor in the file: float32
    tensors, or with `quantized` a QuantizedWeight for each projection,
    embedding or expert whose block type the quantized kernel reads; the
    stacked expert tensors of MoE files as one tensor per expert."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from vllm.model_executor.layers.quantization.gguf import gguf_quantized

    reader = _reader(path)
    arch = gguf_architecture(path)
    model_type = _hf_architecture(path)[1]
    moe = "block_sparse_moe" if model_type == "mixtral" else "mlp"
    num_heads = int(reader.get(f"{arch}.attention.head_count"))
    num_kv_heads = int(reader.get(f"{arch}.attention.head_count_kv", num_heads))
    permuted = arch in ("llama", "mistral")
    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        suffix = parts[-1]  # weight / bias
        kind = parts[2] if parts[0] == "blk" else parts[0]
        if parts[0] == "blk" and kind in _EXPERT_TENSORS:
            leaf = _EXPERT_TENSORS[kind][0 if model_type == "mixtral" else 1]
            prefix = f"model.layers.{parts[1]}.{moe}.experts"
            if quantized and suffix == "weight" and _keep_quantized(tensor, kind):
                # [E, n, row bytes]: each expert's rows in their block type
                k, n = int(tensor.shape[0]), int(tensor.shape[1])
                type_name = GGMLQuantizationType(tensor.tensor_type).name
                for expert in range(tensor.data.shape[0]):
                    yield (f"{prefix}.{expert}.{leaf}.{suffix}",
                           gguf_quantized(tensor.data[expert], type_name, n, k))
                continue
            stacked = _dequantized(tensor, dequantize)
            for expert in range(stacked.shape[0]):
                yield f"{prefix}.{expert}.{leaf}.{suffix}", stacked[expert]
            continue
        if parts[0] == "blk" and kind in _LAYER_TENSORS:
            name = f"model.layers.{parts[1]}.{_LAYER_TENSORS[kind].format(moe=moe)}.{suffix}"
        elif parts[0] in _GLOBAL_TENSORS:
            name = f"{_GLOBAL_TENSORS[kind]}.{suffix}"
        else:
            logger.debug("skipping GGUF tensor %s", tensor.name)
            continue
        heads = num_heads if kind == "attn_q" else num_kv_heads
        if quantized and suffix == "weight" and _keep_quantized(tensor, kind):
            k, n = int(tensor.shape[0]), int(tensor.shape[1])
            raw = tensor.data
            if permuted and kind in ("attn_q", "attn_k"):
                raw = raw[_rotary_row_order(n, heads)]
            yield name, gguf_quantized(raw, GGMLQuantizationType(tensor.tensor_type).name, n, k)
            continue
        weights = _dequantized(tensor, dequantize)
        if permuted and kind in ("attn_q", "attn_k"):
            weights = torch.from_numpy(_unpermute_rotary(weights.numpy(), heads))
        if kind == "ffn_gate_inp_shexp":  # a [hidden] vector in GGUF, [1, hidden] in HF
            weights = weights.reshape(1, -1)
        yield name, weights.contiguous()


def _dequantized(tensor, dequantize) -> torch.Tensor:
    array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
    if not array.flags.writeable:  # F32 tensors come back as read-only file views
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))


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
