"""Tiny random-initialised DeepSeek checkpoints written by transformers
itself, scaled (as moe_checkpoints.py) so that routing, every expert and the
attention visibly move the logits.

- "v2": DeepSeek-V2-Lite's form: query without LoRA, greedy softmax routing
  over 8 experts (top-2), two shared experts, layer 0 dense.
- "v2_grouped": DeepSeek-V2 proper: query LoRA, group-limited greedy routing
  (4 groups, best 2), top-3 renormalised times a routed scaling factor.
- "v3": DeepSeek-V3: query LoRA, sigmoid scores with the score-correction
  bias, grouped top-k, routed scaling, YaRN rope scaling with its mscale
  correction of the softmax scale, two dense layers.

Head dims are multiples of 16 (our MLA kernels' unit): kv_lora_rank 32 and
qk_rope_head_dim 16 make a 48-value latent; nope 24 and v 20 differ from
each other and from the rope dims, so a mixed-up split cannot pass."""
from __future__ import annotations

from tests.engine.moe_checkpoints import write_random_checkpoint

COMMON = dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=512, kv_lora_rank=32,
              qk_nope_head_dim=24, qk_rope_head_dim=16, v_head_dim=20, intermediate_size=160,
              moe_intermediate_size=48, first_k_dense_replace=1)

ARCHS = {
    "v2": ("DeepseekV2Config", "DeepseekV2ForCausalLM",
           dict(q_lora_rank=None, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2,
                topk_method="greedy", norm_topk_prob=False)),
    "v2_grouped": ("DeepseekV2Config", "DeepseekV2ForCausalLM",
                   dict(q_lora_rank=48, n_routed_experts=8, n_shared_experts=1,
                        num_experts_per_tok=3, topk_method="group_limited_greedy", n_group=4,
                        topk_group=2, routed_scaling_factor=1.5)),
    "v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM",
           dict(q_lora_rank=48, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
                n_group=4, topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
                first_k_dense_replace=2,
                rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                 "original_max_position_embeddings": 128, "beta_fast": 32,
                                 "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0})),
}


def save_random_deepseek(arch: str, folder, tokenizer, seed: int = 0, **overrides):
    """Writes the checkpoint and tokenizer to `folder`; returns the fp32
    transformers model."""
    config_name, model_name, extra = ARCHS[arch]
    return write_random_checkpoint(config_name, model_name, {**COMMON, **extra, **overrides},
                                   folder, tokenizer, seed, _scale_deepseek_weights)


def _scale_deepseek_weights(model) -> None:
    for name, param in model.named_parameters():
        if "norm" in name:
            param.uniform_(0.7, 1.3)
        elif name.endswith("mlp.gate.weight"):
            param.normal_(std=0.3)  # routers: decided, not near-uniform
        elif ".mlp." in name:
            param.normal_(std=0.12)
    for name, buffer in model.named_buffers():
        if "e_score_correction_bias" in name:  # steers the choice: a misuse changes experts
            buffer.normal_(std=0.2)
