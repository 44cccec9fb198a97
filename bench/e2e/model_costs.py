"""What a dense Llama-family model must compute and read, from its Hugging
Face config: the yardsticks for "fraction of the FMA peak" (batched runs)
and "fraction of the read bandwidth" (batch-1 decode).

Counted: the layers' linear projections (2 FLOPs per weight per token), the
attention products (QK^T and PV: 4 x head_dim FLOPs per head per cached
position), and the LM head for the tokens that sample. Not counted: norms,
rotary, activations, softmax (a few per cent of the FLOPs at most).
"""
from __future__ import annotations


def _dims(cfg) -> dict:
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return {"hidden": cfg.hidden_size, "inter": cfg.intermediate_size,
            "layers": cfg.num_hidden_layers, "heads": heads,
            "kv_heads": getattr(cfg, "num_key_value_heads", None) or heads,
            "head_dim": head_dim, "vocab": cfg.vocab_size}


def layer_weights(cfg) -> int:
    """Weights of every decoder layer's linear projections (qkv, o, gate/up, down)."""
    d = _dims(cfg)
    qkv = d["hidden"] * (d["heads"] + 2 * d["kv_heads"]) * d["head_dim"]
    o = d["heads"] * d["head_dim"] * d["hidden"]
    mlp = 3 * d["hidden"] * d["inter"]
    return d["layers"] * (qkv + o + mlp)


def lm_head_weights(cfg) -> int:
    d = _dims(cfg)
    return d["vocab"] * d["hidden"]


def _attention_flops(cfg, positions: int) -> int:
    """Attention products for one token that attends to `positions` tokens."""
    d = _dims(cfg)
    return d["layers"] * d["heads"] * 4 * d["head_dim"] * positions


def offline_flops(cfg, num_prompts: int, input_len: int, output_len: int) -> float:
    """FLOPs of generating output_len tokens for each of num_prompts prompts
    of input_len tokens (prefill, then output_len - 1 decode steps)."""
    per_token = 2 * layer_weights(cfg)
    tokens = input_len + output_len - 1  # through the layers, per request
    attention = sum(_attention_flops(cfg, p + 1) for p in range(tokens))
    head = 2 * lm_head_weights(cfg) * output_len
    return float(num_prompts * (tokens * per_token + attention + head))


def decode_bytes(cfg, position: int, weight_bytes: float = 2.0, kv_bytes: float = 2.0) -> float:
    """Bytes a batch-1 decode step at `position` must read: every linear
    weight and the LM head once, plus that sequence's cached K and V."""
    d = _dims(cfg)
    weights = (layer_weights(cfg) + lm_head_weights(cfg)) * weight_bytes
    kv = 2 * d["layers"] * d["kv_heads"] * d["head_dim"] * position * kv_bytes
    return weights + kv
