"""Tiny random-initialised MoE checkpoints written by transformers itself
(Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE), with weights scaled so that the
routing and every expert visibly move the logits: a wrong expert, weight
or sum changes logprobs by far more than the tests' tolerance."""
from __future__ import annotations

import torch

COMMON = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512)

ARCHS = {
    # top-2 of 8, renormalised; experts of 96 (not a multiple of 48: the
    # plain packed path), Mistral-style attention
    "mixtral": dict(intermediate_size=96, num_local_experts=8, num_experts_per_tok=2,
                    rope_theta=1e6),
    # layer 0 dense (mlp_only_layers), layer 1 sparse with a shared expert;
    # top-4 of 12, not renormalised; q/k/v biases
    "qwen2_moe": dict(intermediate_size=160, moe_intermediate_size=48, num_experts=12,
                      num_experts_per_tok=4, shared_expert_intermediate_size=96,
                      mlp_only_layers=[0], decoder_sparse_step=1, norm_topk_prob=False),
    # per-head q/k norms, explicit head_dim, top-3 of 10 renormalised
    "qwen3_moe": dict(moe_intermediate_size=64, num_experts=10, num_experts_per_tok=3,
                      head_dim=48, norm_topk_prob=True, intermediate_size=128),
    # full-width q/k norms and a q/k/v clip, top-2 of 6
    "olmoe": dict(intermediate_size=64, num_experts=6, num_experts_per_tok=2,
                  norm_topk_prob=False, clip_qkv=4.0),
}

CLASSES = {"mixtral": ("MixtralConfig", "MixtralForCausalLM"),
           "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM"),
           "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM"),
           "olmoe": ("OlmoeConfig", "OlmoeForCausalLM")}


def save_random_moe(arch: str, folder, tokenizer, seed: int = 0, **overrides):
    """Writes the checkpoint and tokenizer to `folder`; returns the fp32
    transformers model."""
    config_name, model_name = CLASSES[arch]
    return write_random_checkpoint(config_name, model_name, {**COMMON, **ARCHS[arch], **overrides},
                                   folder, tokenizer, seed, _scale_moe_weights)


def _scale_moe_weights(model) -> None:
    for name, param in model.named_parameters():
        if "norm" in name:
            param.uniform_(0.7, 1.3)
        elif name.endswith("bias"):
            param.normal_(std=0.3)
        elif ".gate." in name or name.endswith("gate.weight"):
            param.normal_(std=0.3)  # routers: decided, not near-uniform
        elif "experts" in name or "shared_expert" in name or "mlp" in name:
            param.normal_(std=0.12)


def write_random_checkpoint(config_name: str, model_name: str, config_kwargs: dict, folder,
                            tokenizer, seed: int, rescale):
    """transformers' `model_name` of config `config_name` (no special token
    ids), random-initialised from `seed`, `rescale(model)` applied, written
    with `tokenizer` to `folder`; returns the fp32 model."""
    import transformers
    config = getattr(transformers, config_name)(vocab_size=len(tokenizer), **config_kwargs)
    config.pad_token_id = None
    config.bos_token_id = config.eos_token_id = None
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).to(torch.float32).eval()
    with torch.no_grad():
        rescale(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model
