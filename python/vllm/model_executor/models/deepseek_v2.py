"""DeepSeek-V2 (and V2-Lite) and DeepSeek-V3: multi-head latent attention
(layers/mla_attention.py) and mixture-of-experts layers with shared experts.

Attention: the query comes from hidden (q_proj), or through a low-rank
bottleneck (q_a_proj, q_a_layernorm, q_b_proj: V3, V2 proper); each head is
qk_nope_head_dim un-rotated plus qk_rope_head_dim rotated dims. Keys and
values come from one latent per token, kv_a_proj_with_mqa's first
kv_lora_rank outputs after kv_a_layernorm, plus a rotated key part shared by
every head (its last qk_rope_head_dim outputs). Rotary is GPT-J style
(adjacent pairs), YaRN-scaled where configured, with DeepSeek's mscale
correction of the softmax scale.

Feed-forward: layers before first_k_dense_replace are dense; the others
route each token to top-k experts (V2: softmax, greedy or group-limited;
V3: sigmoid scores, grouped top-k steered by the score-correction bias),
weights times routed_scaling_factor, plus shared experts every token takes.

VLLM_MLA_DISABLE=1 runs the same model with a per-head KV cache and the
ordinary attention kernels (values zero-padded to the key head size)."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from vllm import envs
from vllm.distributed.communication_op import reduce_over_tensor_ranks
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.fused_moe import FusedMoE
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import Linear
from vllm.model_executor.layers.mla_attention import MLAAttention
from vllm.model_executor.layers.rotary import RotaryEmbedding, rope_settings, yarn_softmax_scale
from vllm.model_executor.layers.tensor_parallel import (ColumnParallelLinear, RowParallelLinear,
                                                        divide, tp_rank_and_size)
from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaMLP
from vllm.model_executor.models.moe_block import HF_EXPERT_NAMES

logger = logging.getLogger(__name__)


class DeepseekV2Attention(nn.Module):
    """With tensor parallelism each rank takes an equal share of the heads
    (their rows of q_proj / q_b_proj and kv_b_proj, their columns of o_proj,
    reduced over ranks); the low-rank projections and their norms, the
    latent and so the latent cache are the same on every rank, as in vLLM."""
    splits_across_tensor_ranks = True

    def __init__(self, config, dtype: torch.dtype, backend, qkv_bias: bool) -> None:
        super().__init__()
        hidden = config.hidden_size
        tp_rank, tp_size = tp_rank_and_size()
        self.num_heads = divide(config.num_attention_heads, tp_size,
                                "the number of attention heads")
        self.q_lora_rank = getattr(config, "q_lora_rank", None)
        self.kv_lora_rank = config.kv_lora_rank
        self.nope, self.rope = config.qk_nope_head_dim, config.qk_rope_head_dim
        self.v_head_dim = config.v_head_dim
        self.qk_head_dim = self.nope + self.rope
        bias = bool(getattr(config, "attention_bias", False))

        def heads_rows(in_features: int, per_head: int) -> Linear:
            """This rank's heads' rows of a per-head projection."""
            rows = self.num_heads * per_head
            if tp_size == 1:
                return Linear(in_features, rows, bias=False, dtype=dtype)
            return ColumnParallelLinear(in_features, {"": (tp_rank * rows, rows)},
                                        bias=False, dtype=dtype)

        if self.q_lora_rank is None:
            self.q_proj = heads_rows(hidden, self.qk_head_dim)
        else:
            self.q_a_proj = Linear(hidden, self.q_lora_rank, bias=bias, dtype=dtype)
            self.q_a_layernorm = RMSNorm(self.q_lora_rank, config.rms_norm_eps, dtype)
            self.q_b_proj = heads_rows(self.q_lora_rank, self.qk_head_dim)
        self.kv_a_proj_with_mqa = Linear(hidden, self.kv_lora_rank + self.rope, bias=bias,
                                         dtype=dtype)
        self.kv_a_layernorm = RMSNorm(self.kv_lora_rank, config.rms_norm_eps, dtype)
        self.kv_b_proj = heads_rows(self.kv_lora_rank, self.nope + self.v_head_dim)
        all_heads_v = config.num_attention_heads * self.v_head_dim
        self.o_proj = (Linear(all_heads_v, hidden, bias=bias, dtype=dtype) if tp_size == 1
                       else RowParallelLinear(all_heads_v, hidden, bias=bias, dtype=dtype))
        base, scaling = rope_settings(config)
        # V2 rotates adjacent pairs; V3 too unless rope_interleave is off
        neox = getattr(config, "rope_interleave", True) is False
        self.rotary_emb = RotaryEmbedding(self.rope, self.rope, config.max_position_embeddings,
                                          base, neox, dtype, scaling)
        self.scale = yarn_softmax_scale(scaling, self.qk_head_dim ** -0.5)
        self.mla = not envs.VLLM_MLA_DISABLE
        if self.mla:
            self.attn = MLAAttention(self.num_heads, self.kv_lora_rank, self.nope, self.rope,
                                     self.v_head_dim, self.scale,
                                     absorb=envs.VLLM_MLA_PERFORM_MATRIX_ABSORPTION,
                                     backend=backend)
        else:
            # keys [nope | rope] per head; values padded to the same size
            self.attn = Attention(self.num_heads, self.qk_head_dim, self.scale, self.num_heads,
                                  backend)
            if self.v_head_dim > self.qk_head_dim:
                raise ValueError(f"VLLM_MLA_DISABLE=1 needs v_head_dim ({self.v_head_dim}) <= "
                                 f"the key head size ({self.qk_head_dim})")

    def process_weights_after_loading(self) -> None:
        if self.kv_b_proj.quantized:
            raise ValueError("MLA with a quantized kv_b_proj is not supported")
        if self.mla:
            self.attn.set_up_projection(self.kv_b_proj.weight.data)

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor,
                output_rows: torch.Tensor | None = None) -> torch.Tensor:
        q_in = hidden if output_rows is None else hidden[output_rows]
        if self.q_lora_rank is None:
            q = self.q_proj(q_in)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(q_in)))
        q = q.view(-1, self.num_heads, self.qk_head_dim)
        kv_a = self.kv_a_proj_with_mqa(hidden)
        latent = self.kv_a_layernorm(kv_a[:, :self.kv_lora_rank].contiguous())
        k_pe = kv_a[:, self.kv_lora_rank:].contiguous()
        q_pe = q[..., self.nope:].contiguous()
        q_positions = positions if output_rows is None else positions[output_rows]
        # rotary in place: queries (their rows) and the shared key part (every row)
        self.rotary_emb(q_positions, q_pe.view(q_pe.shape[0], self.num_heads * self.rope), None)
        self.rotary_emb(positions, k_pe, None)
        q_nope = q[..., :self.nope]
        if self.mla:
            out = self.attn(q_nope, q_pe, latent, k_pe, output_rows is not None)
        else:
            out = self._per_head(q_nope, q_pe, latent, k_pe, output_rows is not None)
        return self.o_proj(out)

    def _per_head(self, q_nope, q_pe, latent, k_pe, output_rows_only: bool) -> torch.Tensor:
        """VLLM_MLA_DISABLE=1: per-head keys and values of the new tokens into
        an ordinary KV cache."""
        tokens = latent.shape[0]
        kv = self.kv_b_proj(latent).view(tokens, self.num_heads, self.nope + self.v_head_dim)
        key = torch.cat([kv[..., :self.nope],
                         k_pe.unsqueeze(1).expand(tokens, self.num_heads, self.rope)], dim=-1)
        value = F.pad(kv[..., self.nope:], (0, self.qk_head_dim - self.v_head_dim))
        query = torch.cat([q_nope, q_pe], dim=-1)
        width = self.num_heads * self.qk_head_dim
        out = self.attn(query.reshape(query.shape[0], width), key.reshape(tokens, width),
                        value.reshape(tokens, width), output_rows_only)
        out = out.view(-1, self.num_heads, self.qk_head_dim)[..., :self.v_head_dim]
        return out.reshape(out.shape[0], self.num_heads * self.v_head_dim)


class DeepseekMoE(nn.Module):
    """Routed experts plus shared experts; the router in fp32, as DeepSeek
    trains and transformers runs it. With tensor parallelism the router is
    the same on every rank, the experts (routed and shared) split their
    intermediate dimension, and the block all-reduces the sum of their
    partial sums once."""
    splits_across_tensor_ranks = True

    def __init__(self, config, dtype: torch.dtype, v3: bool) -> None:
        super().__init__()
        hidden, experts = config.hidden_size, config.n_routed_experts
        self.gate = nn.Module()
        self.gate.weight = nn.Parameter(torch.empty(experts, hidden, dtype=torch.float32),
                                        requires_grad=False)
        bias = None
        if v3:  # sigmoid scores, grouped top-k steered by the correction bias
            self.gate.e_score_correction_bias = nn.Parameter(
                torch.zeros(experts, dtype=torch.float32), requires_grad=False)
            bias = self.gate.e_score_correction_bias
            routing = dict(use_grouped_topk=True, num_expert_group=config.n_group,
                           topk_group=config.topk_group, scoring_func="sigmoid")
        elif getattr(config, "topk_method", "greedy") == "group_limited_greedy":
            routing = dict(use_grouped_topk=True, num_expert_group=config.n_group,
                           topk_group=config.topk_group, scoring_func="softmax")
        else:
            routing = {}
        self.experts = FusedMoE(experts, config.num_experts_per_tok, hidden,
                                config.moe_intermediate_size, dtype,
                                renormalize=bool(getattr(config, "norm_topk_prob", False)),
                                routed_scaling_factor=float(
                                    getattr(config, "routed_scaling_factor", 1.0) or 1.0),
                                e_score_correction_bias=bias, reduce_results=False,
                                activation=getattr(config, "hidden_act", "silu"), **routing)
        self.experts._checkpoint_leaf.update(HF_EXPERT_NAMES)
        shared = getattr(config, "n_shared_experts", None) or 0
        self.shared_experts = (LlamaMLP(config, dtype, config.moe_intermediate_size * shared,
                                        reduce_results=False) if shared else None)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden.float(), self.gate.weight)
        out = self.experts(hidden, logits)
        if self.shared_experts is not None:
            out = out + self.shared_experts(hidden)
        return reduce_over_tensor_ranks(out)


class DeepseekV2DecoderLayer(LlamaDecoderLayer):
    attention_cls = DeepseekV2Attention
    v3 = False

    def make_mlp(self, config, dtype: torch.dtype, layer_idx: int) -> nn.Module:
        freq = getattr(config, "moe_layer_freq", 1) or 1
        if (getattr(config, "n_routed_experts", None)
                and layer_idx >= (getattr(config, "first_k_dense_replace", 0) or 0)
                and layer_idx % freq == 0):
            return DeepseekMoE(config, dtype, self.v3)
        return LlamaMLP(config, dtype)


class DeepseekV3DecoderLayer(DeepseekV2DecoderLayer):
    v3 = True


class DeepseekV2ForCausalLM(LlamaForCausalLM):
    decoder_layer_cls = DeepseekV2DecoderLayer
    # only the MLPs fuse checkpoint projections (q_proj is DeepSeek's own)
    stacked_params = {"gate_proj": ("gate_up_proj", "gate"), "up_proj": ("gate_up_proj", "up")}

    def __init__(self, config, dtype: torch.dtype, attn_backend) -> None:
        super().__init__(config, dtype, attn_backend)
        if envs.VLLM_MLA_DISABLE:
            logger.info("VLLM_MLA_DISABLE=1: per-head KV cache and the ordinary attention "
                        "kernels instead of MLA")
        elif not envs.VLLM_MLA_PERFORM_MATRIX_ABSORPTION:
            logger.warning("VLLM_MLA_PERFORM_MATRIX_ABSORPTION=0: every step up-projects the "
                           "cached latents to per-head keys and values in PyTorch (slow; for "
                           "comparison)")

    def load_weights(self, weights):
        # DeepSeek-V3 checkpoints carry multi-token-prediction layers past
        # num_hidden_layers, which inference does not run
        layers = self.config.num_hidden_layers

        def main_layers():
            for name, tensor in weights:
                if name.startswith("model.layers."):
                    if int(name.split(".")[2]) >= layers:
                        continue
                yield name, tensor

        return super().load_weights(main_layers())


class DeepseekV3ForCausalLM(DeepseekV2ForCausalLM):
    decoder_layer_cls = DeepseekV3DecoderLayer
