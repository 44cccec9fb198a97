"""Llama-family decoder (Llama 2/3, SmolLM2; Mistral and Qwen2 reuse it):
fused QKV and gate/up projections, our norm / rotary / activation / paged
attention kernels, and a loader that maps Hugging Face weight names."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from vllm.distributed.parallel_state import (get_pipeline_model_parallel_rank,
                                             get_pipeline_model_parallel_world_size)
from vllm.distributed.utils import get_pp_indices
from vllm.forward_context import get_attn_metadata_or_none
from vllm.model_executor.layers.activation import ActAndMul, gate_up_activation
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.fused_moe.layer import FusedMoE, load_expert_checkpoint_tensor
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.quantization.embedding import QuantizedEmbedding
from vllm.model_executor.layers.quantization.packing import QuantizedWeight
from vllm.model_executor.layers.linear import (Linear, apply_linear, is_pair_packed,
                                               pack_weights_in_call_order,
                                               place_quantized_in_call_order,
                                               place_weights_in_call_order)
from vllm.model_executor.layers.rotary import RotaryEmbedding, rope_settings
from vllm.model_executor.layers.tensor_parallel import (ColumnParallelLinear, RowParallelLinear,
                                                        VocabParallelEmbedding, divide,
                                                        tp_rank_and_size)
from vllm.model_executor.models.fused_decode import FusedDecode
from vllm.sequence import IntermediateTensors


class PPMissingLayer(nn.Module):
    """The place of a module another pipeline stage holds (vLLM's name):
    layer indices and checkpoint names stay those of the whole model."""


class LlamaAttention(nn.Module):
    # heads split across tensor ranks (_split_heads)
    splits_across_tensor_ranks = True

    def __init__(self, config, dtype: torch.dtype, backend, qkv_bias: bool) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_size = getattr(config, "head_dim", None) or hidden // self.num_heads
        self.q_size = self.num_heads * self.head_size
        self.kv_size = self.num_kv_heads * self.head_size
        attention_bias = bool(getattr(config, "attention_bias", False))
        tp_rank, tp_size = tp_rank_and_size()
        if tp_size == 1:
            self.qkv_proj = Linear(hidden, {"q": self.q_size, "k": self.kv_size,
                                            "v": self.kv_size},
                                   bias=qkv_bias or attention_bias, dtype=dtype)
            self.o_proj = Linear(self.q_size, hidden, bias=attention_bias, dtype=dtype)
        else:
            self._split_heads(hidden, tp_rank, tp_size, qkv_bias or attention_bias,
                              attention_bias, dtype)
        rotary_dim = int(self.head_size * getattr(config, "partial_rotary_factor", 1.0))
        base, scaling = rope_settings(config)
        self.rotary_emb = RotaryEmbedding(self.head_size, rotary_dim,
                                          config.max_position_embeddings, base, True, dtype,
                                          scaling)
        self.attn = Attention(self.num_heads, self.head_size, self.head_size ** -0.5,
                              self.num_kv_heads, backend)

    def _split_heads(self, hidden: int, rank: int, size: int, qkv_bias: bool, o_bias: bool,
                     dtype: torch.dtype) -> None:
        """Tensor parallelism: this rank's query heads and their KV heads
        (each KV head on size / num_kv_heads ranks when there are fewer KV
        heads than ranks)."""
        heads = divide(self.num_heads, size, "the number of attention heads")
        if self.num_kv_heads >= size:
            kv_heads = divide(self.num_kv_heads, size, "the number of KV heads")
            kv_first = rank * kv_heads
        else:
            divide(size, self.num_kv_heads, "tensor_parallel_size over the KV heads")
            kv_heads, kv_first = 1, rank * self.num_kv_heads // size
        d = self.head_size
        self.qkv_proj = ColumnParallelLinear(
            hidden, {"q": (rank * heads * d, heads * d), "k": (kv_first * d, kv_heads * d),
                     "v": (kv_first * d, kv_heads * d)}, bias=qkv_bias, dtype=dtype)
        self.o_proj = RowParallelLinear(self.q_size, hidden, bias=o_bias, dtype=dtype)
        self.num_heads, self.num_kv_heads = heads, kv_heads
        self.q_size, self.kv_size = heads * d, kv_heads * d

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor,
                output_rows: torch.Tensor | None = None) -> torch.Tensor:
        """`output_rows`: attend and project only these rows (every row's
        keys and values still go to the cache)."""
        qkv = self.qkv_proj(hidden)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, k, v = self.normalize_qkv(q, k, v)
        q, k = self.rotary_emb(positions, q, k)
        if output_rows is not None:
            q = q[output_rows]
        return self.o_proj(self.attn(q, k, v, output_rows is not None))

    def normalize_qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Before rotary: nothing in Llama; q/k norms in Qwen3 and OLMoE."""
        return q, k, v


class LlamaMLP(nn.Module):
    splits_across_tensor_ranks = True

    def __init__(self, config, dtype: torch.dtype, intermediate_size: int | None = None,
                 reduce_results: bool = True) -> None:
        """`reduce_results=False` (tensor parallelism): return this rank's
        partial sum, for a caller that adds it to others before one
        all-reduce (an MoE block's shared experts)."""
        super().__init__()
        inter = intermediate_size or config.intermediate_size
        bias = getattr(config, "mlp_bias", False)
        rank, size = tp_rank_and_size()
        if size == 1:
            self.gate_up_proj = Linear(config.hidden_size, {"gate": inter, "up": inter},
                                       bias=bias, dtype=dtype, gate_up=True)
            self.down_proj = Linear(inter, config.hidden_size, bias=bias, dtype=dtype)
        else:
            local = divide(inter, size, "the MLP's intermediate size")
            self.gate_up_proj = ColumnParallelLinear(
                config.hidden_size, {"gate": (rank * local, local), "up": (rank * local, local)},
                bias=bias, dtype=dtype, gate_up=True)
            self.down_proj = RowParallelLinear(inter, config.hidden_size, bias=bias, dtype=dtype,
                                               reduce_results=reduce_results)
        self.act = ActAndMul(getattr(config, "hidden_act", "silu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(gate_up_activation(x, self.gate_up_proj, self.act))


class LlamaDecoderLayer(nn.Module):
    attention_cls = LlamaAttention
    # the feed-forward module's name (Mixtral's checkpoints say block_sparse_moe)
    mlp_name = "mlp"

    def __init__(self, config, dtype: torch.dtype, backend, qkv_bias: bool,
                 layer_idx: int = 0) -> None:
        super().__init__()
        self.self_attn = self.attention_cls(config, dtype, backend, qkv_bias)
        setattr(self, self.mlp_name, self.make_mlp(config, dtype, layer_idx))
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)

    def forward(self, positions, hidden, residual, output_rows=None):
        """`output_rows`: return only these rows (the model's last layer, when
        the step reads only some rows' hidden states)."""
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, output_rows)
        if output_rows is not None:
            residual = residual[output_rows]
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return getattr(self, self.mlp_name)(hidden), residual

    def make_mlp(self, config, dtype: torch.dtype, layer_idx: int) -> nn.Module:
        return LlamaMLP(config, dtype)

    def supports_tensor_parallel(self) -> bool:
        """Whether both halves split across tensor ranks: attention by heads
        (q/k norms per head at most), a dense MLP or a sparse MoE block."""
        return all(getattr(module, "splits_across_tensor_ranks", False)
                   for module in (self.self_attn, getattr(self, self.mlp_name)))

    def is_plain_llama(self) -> bool:
        """Whether the C++ layer loop (FusedDecode) can run this layer."""
        return (type(self.self_attn) is LlamaAttention and self.mlp_name == "mlp"
                and type(self.mlp) is LlamaMLP)


class LlamaModel(nn.Module):
    """With pipeline parallelism this stage's layers only: the first stage
    also embeds the tokens, the last one also holds the final norm (and, in
    LlamaForCausalLM, the LM head)."""

    def __init__(self, config, dtype: torch.dtype, backend, qkv_bias: bool = False,
                 layer_cls: type[LlamaDecoderLayer] = LlamaDecoderLayer) -> None:
        super().__init__()
        self.tp_size = tp_rank_and_size()[1]
        pp_rank, pp_size = (get_pipeline_model_parallel_rank(),
                            get_pipeline_model_parallel_world_size())
        self.is_first_stage, self.is_last_stage = pp_rank == 0, pp_rank == pp_size - 1
        n = config.num_hidden_layers
        self.start_layer, self.end_layer = get_pp_indices(n, pp_rank, pp_size)
        # a tied LM head is the embedding: the last stage holds it too
        tied = bool(getattr(config, "tie_word_embeddings", False))
        if not (self.is_first_stage or (self.is_last_stage and tied)):
            self.embed_tokens = PPMissingLayer()
        elif self.tp_size == 1:
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
            self.embed_tokens.weight.requires_grad_(False)
        else:
            self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size,
                                                       dtype)
        self.layers = nn.ModuleList(
            layer_cls(config, dtype, backend, qkv_bias, i)
            if self.start_layer <= i < self.end_layer else PPMissingLayer() for i in range(n))
        self.norm = (RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
                     if self.is_last_stage else PPMissingLayer())
        plain = all(layer.is_plain_llama() for layer in self.local_layers)
        if self.tp_size > 1 and not all(layer.supports_tensor_parallel()
                                        for layer in self.local_layers):
            raise ValueError("tensor parallelism runs the Llama family (Llama, Mistral, Qwen2, "
                             "SmolLM2), its MoE models (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) "
                             "and DeepSeek; this model's layers do not split across ranks")
        # the C++ layer loop has no all-reduce: one rank only
        self.fused_decode = (FusedDecode(self.local_layers, self)
                             if plain and self.tp_size == 1 else None)

    @property
    def local_layers(self) -> list[LlamaDecoderLayer]:
        return list(self.layers[self.start_layer:self.end_layer])

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None
                ) -> torch.Tensor | IntermediateTensors:
        """Final hidden states of every row, or of md.output_rows only when
        the step's metadata names them; a stage before the last returns its
        layers' output for the next stage instead."""
        md = get_attn_metadata_or_none()
        if (intermediate_tensors is None and self.fused_decode is not None
                and self.fused_decode.applicable_to_ids(input_ids, md)):
            # embedding, layers and final norm in one call: no torch op
            # between them from Python (each ~25-45 us cold after a step's
            # weights went through the caches)
            return self.fused_decode.run_from_ids(input_ids, positions, md)
        if self.is_first_stage:
            hidden = self.embed_tokens(input_ids)
        else:
            hidden = intermediate_tensors["hidden_states"]
        if self.fused_decode is not None and self.fused_decode.applicable(hidden, md):
            hidden, residual = self.fused_decode.run(hidden, positions, md,
                                                     prune_rows=self.is_last_stage)
        else:
            # The last layer's attention output and MLP serve only the rows
            # read (a prefill's last token): ~1/30 of a 30-layer prompt.
            output_rows = md.output_rows if md is not None and self.is_last_stage else None
            residual = None
            layers = self.local_layers
            for i, layer in enumerate(layers):
                hidden, residual = layer(positions, hidden, residual,
                                         output_rows if i == len(layers) - 1 else None)
        if not self.is_last_stage:
            # The next layer's first act is residual = hidden + residual: the
            # sum is all it needs (half the bytes; it starts as layer 0 does).
            return IntermediateTensors({"hidden_states": hidden + residual})
        hidden, _ = self.norm(hidden, residual)
        return hidden


# Checkpoint projection name -> (our fused layer, shard)
_STACKED = {"q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"),
            "v_proj": ("qkv_proj", "v"), "gate_proj": ("gate_up_proj", "gate"),
            "up_proj": ("gate_up_proj", "up")}


class LlamaForCausalLM(nn.Module):
    qkv_bias = False
    decoder_layer_cls = LlamaDecoderLayer
    # forward() honours AttentionMetadata.output_rows (returns those rows only)
    supports_output_rows = True
    # checkpoint projections fused into one of our layers
    stacked_params = _STACKED

    def __init__(self, config, dtype: torch.dtype, attn_backend) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, dtype, attn_backend, self.qkv_bias,
                                self.decoder_layer_cls)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        if not self.model.is_last_stage:
            self.lm_head = PPMissingLayer()
        elif self.tie_word_embeddings:
            self.lm_head = self.model.embed_tokens
        elif self.model.tp_size > 1:
            self.lm_head = VocabParallelEmbedding(config.vocab_size, config.hidden_size, dtype)
        else:
            self.lm_head = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
            self.lm_head.weight.requires_grad_(False)
        self.packed_lm_head: torch.Tensor | None = None

    def attention_layers(self) -> list[Attention]:
        """This stage's, in order: the ones it keeps a KV cache for."""
        return [layer.self_attn.attn for layer in self.model.local_layers]

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None
                ) -> torch.Tensor | IntermediateTensors:
        return self.model(input_ids, positions, intermediate_tensors)

    def _held_by_another_stage(self, name: str) -> bool:
        """Pipeline parallelism: checkpoint tensors of modules this stage
        does not hold."""
        if name.startswith("model.layers."):
            index = int(name.split(".")[2])
            return not self.model.start_layer <= index < self.model.end_layer
        top = name.rsplit(".", 1)[0]
        return isinstance({"model.embed_tokens": self.model.embed_tokens,
                           "model.norm": self.model.norm,
                           "lm_head": self.lm_head}.get(top), PPMissingLayer)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of the given hidden states (only the rows to sample), in the
        model's dtype, as transformers computes them; the sampler upcasts."""
        logits = apply_linear(hidden, self.lm_head.weight, None, self.packed_lm_head)
        if isinstance(self.lm_head, VocabParallelEmbedding):  # this rank's vocabulary range
            logits = self.lm_head.gather_logits(logits)
        return logits

    def process_weights_after_loading(self) -> None:
        # in call order; quantized ones are packed already (Linear.load)
        quantized = [m for m in self.modules() if isinstance(m, Linear) and m.quantized]
        linears = [m for m in self.modules() if isinstance(m, Linear) and not m.quantized]
        no_head = isinstance(self.lm_head, PPMissingLayer)  # another stage's
        quantized_head = (self.lm_head if isinstance(self.lm_head, QuantizedEmbedding)
                          else self.lm_head.quantized  # a rank's rows, quantized or None
                          if isinstance(self.lm_head, VocabParallelEmbedding) else None)
        head = [] if no_head or quantized_head is not None else [self.lm_head]
        place_quantized_in_call_order(quantized)
        if quantized_head is not None:
            place_quantized_in_call_order([quantized_head], "packed")
        # the LM head is the last weight a decode step streams
        packed = pack_weights_in_call_order([m.weight for m in linears + head],
                                            [m.gate_up for m in linears] + [False] * len(head))
        for module, weight in zip(linears, packed):
            module.packed_weight = weight
        self.packed_lm_head = (packed[-1] if head else
                               None if no_head else quantized_head.packed)
        for module in self.modules():  # e.g. FusedMoE: packs its experts
            if (module is not self and not isinstance(module, Linear)
                    and hasattr(module, "process_weights_after_loading")):
                module.process_weights_after_loading()
        if not all(is_pair_packed(p) for p in packed):
            # the plain weights are what decode steps stream (small-row kernel);
            # with our packed copies they are only a fallback, left as loaded
            # (on this project's VM every 2 MiB page costs ~5 ms to fault in)
            place_weights_in_call_order(linears + head)

    def _load_quantized_embedding(self, name: str, weight: QuantizedWeight) -> None:
        """A quantized token embedding (tied: the LM head too) or LM head."""
        expected = (self.config.vocab_size, self.config.hidden_size)
        if weight.shape != expected:
            raise ValueError(f"checkpoint {name} has shape {weight.shape}, expected {expected}")
        dtype = self.model.embed_tokens.weight.dtype
        module = QuantizedEmbedding(weight, dtype)
        if name == "model.embed_tokens.weight":
            self.model.embed_tokens = module
            if self.tie_word_embeddings:
                self.lm_head = module
        else:
            self.lm_head = module

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Copy checkpoint tensors in; returns the parameter names filled."""
        modules = dict(self.named_modules())
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        shards_seen: dict[str, set[str]] = {}
        tp = self.model.tp_size > 1
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name or self._held_by_another_stage(name):
                continue
            moe_path = load_expert_checkpoint_tensor(name, tensor, modules)
            if moe_path is not None:
                if modules[moe_path].all_loaded():
                    loaded.update(f"{moe_path}.{p}" for p in ("w13_weight", "w2_weight"))
                continue
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue  # tied: the embedding is the head
            if (isinstance(tensor, QuantizedWeight) and not tp
                    and name in ("model.embed_tokens.weight", "lm_head.weight")):
                if tensor.input_order is None:
                    self._load_quantized_embedding(name, tensor)
                    loaded.add(name)
                    continue
                # an act-order LM head: rows are looked up by token too, dense
                tensor = tensor.dequantize(self.model.embed_tokens.weight.dtype)
            module_path, _, leaf = name.rpartition(".")
            parent, _, proj = module_path.rpartition(".")
            if proj in self.stacked_params:
                fused, shard = self.stacked_params[proj]
                layer = modules[f"{parent}.{fused}"]
                layer.load(leaf, tensor, shard)
                seen = shards_seen.setdefault(f"{parent}.{fused}.{leaf}", set())
                seen.add(shard)
                if seen == set(layer.shard_offsets):  # complete only with every shard
                    loaded.add(f"{parent}.{fused}.{leaf}")
            elif module_path in modules and isinstance(modules[module_path], Linear):
                modules[module_path].load(leaf, tensor)
                loaded.add(name)
            elif isinstance(modules.get(module_path), VocabParallelEmbedding):
                modules[module_path].load(tensor)
                loaded.add(name)
            elif name in params:
                param = params[name]
                if tuple(param.shape) != tuple(tensor.shape):
                    raise ValueError(f"checkpoint {name} has shape {tuple(tensor.shape)}, "
                                     f"expected {tuple(param.shape)}")
                param.data.copy_(tensor)
                loaded.add(name)
            else:
                raise ValueError(f"checkpoint tensor {name} has no place in {type(self).__name__}")
        missing = [tensor for path, module in modules.items() if isinstance(module, FusedMoE)
                   for tensor in module.missing_checkpoint_tensors(path)]
        if missing:
            raise ValueError("checkpoint lacks expert weights: " + ", ".join(missing[:5])
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        return loaded
