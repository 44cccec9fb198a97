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

import weakref

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

    def __init__(self, layers, model=None) -> None:
        """`model`: the LlamaModel that owns these layers; when this rank holds
        both its ends, a step folds the embedding and the final norm into the
        call too (run_from_ids). Read at each plan, not here: a quantized
        checkpoint replaces the embedding module at load."""
        self.layers = layers
        self._model = weakref.ref(model) if model is not None else None
        self._plan: int | None = None  # the layers registered with fused_decode_plan
        self._bound_cache = None  # the layer-0 cache the plan was made with
        self._bound_table = None  # the embedding table the plan holds, if any
        self._reorders_inputs: bool | None = None  # decided at the first step

    def __del__(self) -> None:
        if self._plan is not None:
            try:
                ops.fused_decode_plan_release(self._plan)
            except Exception:  # interpreter shutdown: the op may be gone already
                pass

    def applicable(self, hidden: torch.Tensor, md: AttentionMetadata | None) -> bool:
        return hidden.dim() == 2 and self._takes(hidden.dtype, hidden.device, md)

    def _takes(self, dtype: torch.dtype, device: torch.device,
               md: AttentionMetadata | None) -> bool:
        """Whether the C++ loop takes a step whose hidden rows have this
        dtype and device."""
        if not (_AVAILABLE and self.enabled and md is not None):
            return False
        attn = self.layers[0].self_attn.attn
        if self._reorders_inputs is None:  # GPTQ act-order: the C++ loop has no gather
            self._reorders_inputs = any(
                getattr(m, "input_order", None) is not None
                for layer in self.layers for m in layer.modules())
        return (not self._reorders_inputs and device.type == "cpu"
                and dtype in (torch.bfloat16, torch.float16)
                and attn.backend is PagedAttentionBackend and attn.kv_cache is not None)

    def _ends(self) -> tuple[torch.Tensor, torch.nn.Module] | None:
        """The model's embedding table and final norm, when this rank holds
        both and the embedding is a plain table lookup."""
        model = self._model() if self._model is not None else None
        if model is None or not (model.is_first_stage and model.is_last_stage):
            return None
        table = getattr(model.embed_tokens, "weight", None)
        if (type(model.embed_tokens) is not torch.nn.Embedding or table is None
                or table.dim() != 2 or table.stride() != (table.shape[1], 1)):
            return None
        return table, model.norm

    def applicable_to_ids(self, input_ids: torch.Tensor, md: AttentionMetadata | None) -> bool:
        """Whether run_from_ids takes this step (the embedding, the layers
        and the final norm in one call)."""
        ends = self._ends()
        return (ends is not None and input_ids.dim() == 1
                and self._takes(ends[0].dtype, ends[0].device, md))

    def _current_plan(self) -> int:
        """The layers' weights, caches and constants, registered once (made
        again if the caches were replaced)."""
        cache = self.layers[0].self_attn.attn.kv_cache
        ends = self._ends()
        table = None if ends is None else ends[0]
        if self._plan is None or self._bound_cache is not cache or self._bound_table is not table:
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
                attn.rotary_emb.is_neox_style, first.mlp.act.name, table,
                None if ends is None else ends[1].weight, 0.0 if ends is None else ends[1].eps)
            if self._plan is not None:
                ops.fused_decode_plan_release(self._plan)
            self._plan, self._bound_cache, self._bound_table = plan, cache, table
        return self._plan

    def run(self, hidden: torch.Tensor, positions: torch.Tensor, md: AttentionMetadata,
            prune_rows: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """`prune_rows`: the last layer serves md.output_rows only (off on a
        pipeline stage before the last: the next stage needs every row)."""
        return self._planned(hidden, positions, md, md.output_rows if prune_rows else None)

    def run_from_ids(self, input_ids: torch.Tensor, positions: torch.Tensor,
                     md: AttentionMetadata) -> torch.Tensor:
        """The model's forward on this rank in one call: the embedding of
        `input_ids`, every layer (the last on md.output_rows, if named) and
        the final norm; returns the final hidden states."""
        hidden, _ = self._planned(input_ids, positions, md, md.output_rows, ends=True)
        return hidden

    def _planned(self, rows: torch.Tensor, positions: torch.Tensor, md: AttentionMetadata,
                 output_rows: torch.Tensor | None,
                 ends: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return ops.fused_decode_planned(
            self._current_plan(), rows, positions, md.slot_mapping, md.block_tables,
            md.seq_lens, md.block_size, md.max_seq_len,
            None if md.decode_only and output_rows is None else md.query_start_loc,
            output_rows, md.output_query_start_loc if output_rows is not None else None,
            quant_int8_max_rows(), embed=ends, final_norm=ends)
