"""The fast path of Llama-family models on CPU: every decoder layer of a
step runs in one C++ call (`_C::fused_decode_layers`,
csrc/cpu/decode_layers.cpp) that chains the same kernels the layer modules
call, without a Python module call and a dispatcher trip per kernel (~3-4
ms of a ~17 ms batch-1 step for SmolLM2 when it was written for decode;
~2-3% of a 512-token prompt). Decode steps and, since, prefill and mixed
steps (the last layer on the step's output rows only, as the modules do).
fp32, another attention backend, or the switch off: the layer-by-layer
path."""
from __future__ import annotations

import torch

from vllm import _custom_ops as ops
from vllm.attention.backends.metadata import AttentionMetadata
from vllm.attention.backends.paged import PagedAttentionBackend
from vllm.model_executor.layers.linear import SMALL_M_MAX_ROWS, quant_int8_max_rows

_AVAILABLE = ops._C is not None and hasattr(torch.ops._C, "fused_decode_layers")


class FusedDecode:
    # Off switch for comparisons (bench, tests): the layer-by-layer path is
    # the reference this one must match.
    enabled = True

    def __init__(self, layers, embed_tokens=None, norm=None) -> None:
        """`embed_tokens` / `norm`: the model's embedding and final norm when
        this rank holds both ends of the model; a step then folds them into
        the call too (run_from_ids)."""
        self.layers = layers
        table = getattr(embed_tokens, "weight", None)
        folds = (type(embed_tokens) is torch.nn.Embedding and norm is not None
                 and table is not None and table.dim() == 2 and table.stride(1) == 1
                 and table.stride(0) == table.shape[1])
        self.embedding = table if folds else None
        self.norm = norm if folds else None
        self._plan: int | None = None  # the layers registered with fused_decode_plan
        self._bound_cache = None  # the layer-0 cache the plan was made with
        self._reorders_inputs: bool | None = None  # decided at the first step

    def __del__(self) -> None:
        if self._plan is not None:
            try:
                ops.fused_decode_plan_release(self._plan)
            except Exception:  # interpreter shutdown: the op may be gone already
                pass

    def applicable(self, hidden: torch.Tensor, md: AttentionMetadata | None) -> bool:
        if not (_AVAILABLE and self.enabled and md is not None):
            return False
        attn = self.layers[0].self_attn.attn
        if self._reorders_inputs is None:  # GPTQ act-order: the C++ loop has no gather
            self._reorders_inputs = any(
                getattr(m, "input_order", None) is not None
                for layer in self.layers for m in layer.modules())
        return (not self._reorders_inputs and hidden.device.type == "cpu" and hidden.dim() == 2
                and hidden.dtype in (torch.bfloat16, torch.float16)
                and attn.backend is PagedAttentionBackend and attn.kv_cache is not None)

    def applicable_to_ids(self, input_ids: torch.Tensor, md: AttentionMetadata | None) -> bool:
        """Whether run_from_ids takes this step (the embedding, the layers
        and the final norm in one call)."""
        return (self.embedding is not None and input_ids.dim() == 1
                and self.applicable(self.embedding[:0], md))

    def _current_plan(self) -> int:
        """The layers' weights, caches and constants, registered once (made
        again if the caches were replaced)."""
        cache = self.layers[0].self_attn.attn.kv_cache
        if self._plan is None or self._bound_cache is not cache:
            weights, biases, packed, key_caches, value_caches = [], [], [], [], []
            for layer in self.layers:
                attn, mlp = layer.self_attn, layer.mlp
                linears = [attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj]
                weights += [layer.input_layernorm.weight, attn.qkv_proj.weight,
                            attn.o_proj.weight, layer.post_attention_layernorm.weight,
                            mlp.gate_up_proj.weight, mlp.down_proj.weight]
                biases += [linear.bias for linear in linears]
                packed += [linear.packed_weight for linear in linears]
                key_caches.append(attn.attn.kv_cache[0])
                value_caches.append(attn.attn.kv_cache[1])
            first = self.layers[0]
            attn = first.self_attn
            plan = ops.fused_decode_plan(
                weights, biases, packed, SMALL_M_MAX_ROWS, key_caches, value_caches,
                attn.rotary_emb.cos_sin_cache, attn.num_heads, attn.num_kv_heads,
                attn.head_size, first.input_layernorm.eps, attn.attn.scale,
                attn.rotary_emb.is_neox_style, first.mlp.act.name, self.embedding,
                None if self.norm is None else self.norm.weight,
                0.0 if self.norm is None else self.norm.eps)
            if self._plan is not None:
                ops.fused_decode_plan_release(self._plan)
            self._plan, self._bound_cache = plan, cache
        return self._plan

    def run(self, hidden: torch.Tensor, positions: torch.Tensor, md: AttentionMetadata,
            prune_rows: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """`prune_rows`: the last layer serves md.output_rows only (off on a
        pipeline stage before the last: the next stage needs every row)."""
        output_rows = md.output_rows if prune_rows else None
        return ops.fused_decode_planned(
            self._current_plan(), hidden, positions, md.slot_mapping, md.block_tables,
            md.seq_lens, md.block_size, md.max_seq_len,
            None if md.decode_only and output_rows is None else md.query_start_loc,
            output_rows,
            md.output_query_start_loc if output_rows is not None else None,
            quant_int8_max_rows())

    def run_from_ids(self, input_ids: torch.Tensor, positions: torch.Tensor,
                     md: AttentionMetadata) -> torch.Tensor:
        """The model's forward on this rank in one call: the embedding of
        `input_ids`, every layer (the last on md.output_rows, if named) and
        the final norm; returns the final hidden states."""
        hidden, _ = ops.fused_decode_planned(
            self._current_plan(), input_ids, positions, md.slot_mapping, md.block_tables,
            md.seq_lens, md.block_size, md.max_seq_len,
            None if md.decode_only and md.output_rows is None else md.query_start_loc,
            md.output_rows, md.output_query_start_loc if md.output_rows is not None else None,
            quant_int8_max_rows(), embed=True, final_norm=True)
        return hidden
