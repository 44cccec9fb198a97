"""FusedMoE: a mixture-of-experts layer as vLLM shapes it. Parameters
w13_weight [E, 2N, K] (each expert's gate rows, then up rows) and w2_weight
[E, K, N]; forward(hidden_states, router_logits) routes each token to its
top-k experts and returns their weighted sum.

Weights arrive per expert from checkpoints (`experts.{i}.w1/w3/w2` as in
Mixtral, `experts.{i}.gate_proj/up_proj/down_proj` as in Qwen-MoE and
OLMoE) or already stacked (transformers' `experts.gate_up_proj` /
`experts.down_proj`). After loading, bf16 experts are packed once (a CPU
with AVX512-BF16 or AVX2): every expert's gate/up with its halves
interleaved for the fused activation, stacked [E, ...], and every W2
stacked likewise, on huge pages; the packed copy is then the only one (the
experts are most of a MoE's bytes: keeping both would double its memory).
A step runs all routed experts in one packed_moe_experts call; elsewhere
(fp32, expert maps, a kernel variant without packed GEMMs) the grouped
Python pass over the same kernels (experts.fused_experts), on the plain
weights or, once packed, on the packed ones (unpacked for a variant that
cannot read them). Quantized experts (AWQ, GPTQ checkpoints) are packed
for quant_linear instead, one [E, ...] uint8 stack each, and run expert by
expert in the grouped pass."""
from __future__ import annotations

import logging
import re
from typing import Callable

import torch
from torch import nn

from vllm.model_executor.layers.fused_moe.experts import (check_expert_weights,
                                                          fused_experts, moe_activation)
from vllm.model_executor.layers.fused_moe.routing import select_experts
from vllm.model_executor.layers.quantization.packing import (QuantizedWeight, concat_rows,
                                                             pack_quantized, packed_supported)
from vllm import _custom_ops as ops
from vllm import hugepages
from vllm.model_executor.layers.linear import (gate_up_packed_shape, pack_gate_up_pairs,
                                               pack_weight_pairs, pair_packed_shape, pairs_apply,
                                               shape_only, unpack_gate_up_pairs,
                                               unpack_weight_pairs)

# checkpoint leaf name -> vLLM's shard id: w1 gate, w3 up, w2 down
_SHARD_OF = {"w1": "w1", "w3": "w3", "w2": "w2",
             "gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
_PER_EXPERT = re.compile(r"^(?P<moe>.+\.experts)\.(?P<expert>\d+)\.(?P<leaf>\w+)\.weight$")
_STACKED = re.compile(r"^(?P<moe>.+\.experts)\.(?P<leaf>gate_up_proj|down_proj)$")


logger = logging.getLogger(__name__)


class FusedMoE(nn.Module):
    def __init__(self, num_experts: int, top_k: int, hidden_size: int, intermediate_size: int,
                 params_dtype: torch.dtype | None = None, reduce_results: bool = False,
                 renormalize: bool = True, use_grouped_topk: bool = False,
                 num_expert_group: int | None = None, topk_group: int | None = None,
                 quant_config=None, tp_size: int | None = None, prefix: str = "",
                 custom_routing_function: Callable | None = None,
                 scoring_func: str = "softmax", routed_scaling_factor: float = 1.0,
                 e_score_correction_bias: torch.Tensor | None = None,
                 activation: str = "silu", apply_router_weight_on_input: bool = False) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"{prefix or 'FusedMoE'}: top-k {top_k} must lie in "
                             f"[1, {num_experts}], the number of experts")
        if quant_config is not None:
            raise ValueError(f"{prefix or 'FusedMoE'}: quantized experts are not supported yet")
        if apply_router_weight_on_input and top_k != 1:
            raise ValueError(f"{prefix or 'FusedMoE'}: apply_router_weight_on_input needs top-k "
                             f"1, got {top_k}")
        from vllm.distributed.parallel_state import (get_tensor_model_parallel_rank,
                                                     get_tensor_model_parallel_world_size)
        group_size = get_tensor_model_parallel_world_size()
        if tp_size not in (None, group_size):
            raise ValueError(f"{prefix or 'FusedMoE'}: tp_size={tp_size}, but the "
                             f"tensor-parallel group has {group_size} ranks")
        # Tensor parallelism: every rank holds every expert's slice of the
        # intermediate dimension (gate/up rows, down columns), as vLLM
        # splits them; the partial sums are all-reduced (reduce_results)
        self.tp_rank, self.tp_size = get_tensor_model_parallel_rank(), group_size
        if intermediate_size % self.tp_size:
            raise ValueError(f"tensor parallelism: the experts' intermediate size "
                             f"({intermediate_size}) is not divisible by tensor_parallel_size "
                             f"{self.tp_size}")
        self.full_intermediate_size = intermediate_size
        intermediate_size //= self.tp_size
        dtype = params_dtype or torch.get_default_dtype()
        self.num_experts, self.top_k = num_experts, top_k
        self.hidden_size, self.intermediate_size = hidden_size, intermediate_size
        self.renormalize, self.reduce_results = renormalize, reduce_results
        self.use_grouped_topk = use_grouped_topk
        self.num_expert_group, self.topk_group = num_expert_group, topk_group
        self.custom_routing_function = custom_routing_function
        self.scoring_func, self.routed_scaling_factor = scoring_func, routed_scaling_factor
        self.e_score_correction_bias = e_score_correction_bias
        self.activation = activation
        self.act = moe_activation(activation)  # rejects an unknown name now, not at a step
        self.apply_router_weight_on_input = apply_router_weight_on_input
        self.prefix = prefix
        self.w13_weight = nn.Parameter(
            torch.empty(num_experts, 2 * intermediate_size, hidden_size, dtype=dtype),
            requires_grad=False)
        self.w2_weight = nn.Parameter(
            torch.empty(num_experts, hidden_size, intermediate_size, dtype=dtype),
            requires_grad=False)
        # the packed copies (process_weights_after_loading), [E, ...] each
        self.w13_packed: torch.Tensor | None = None
        self.w2_packed: torch.Tensor | None = None
        # (expert, shard) pairs loaded, and the checkpoint name of each shard
        # kind, to name what is missing
        self._loaded: set[tuple[int, str]] = set()
        self._checkpoint_leaf: dict[str, str] = {}
        # quantized checkpoint weights (AWQ, GPTQ) by (expert, shard), until
        # process_weights_after_loading packs them for quant_linear; then
        # `quantized` and the packed stacks are uint8
        self._quantized: dict[tuple[int, str], QuantizedWeight] = {}
        self.quantized = False

    # ------------------------------------------------------------ loading
    @classmethod
    def make_expert_params_mapping(cls, ckpt_gate_proj_name: str, ckpt_down_proj_name: str,
                                   ckpt_up_proj_name: str, num_experts: int
                                   ) -> list[tuple[str, str, int, str]]:
        """vLLM's mapping: (param prefix, checkpoint prefix, expert, shard)."""
        return [("experts.w13_" if name in (ckpt_gate_proj_name, ckpt_up_proj_name)
                 else "experts.w2_", f"experts.{expert}.{name}.", expert, shard)
                for expert in range(num_experts)
                for shard, name in (("w1", ckpt_gate_proj_name), ("w2", ckpt_down_proj_name),
                                    ("w3", ckpt_up_proj_name))]

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor,
                      weight_name: str, shard_id: str, expert_id: int) -> None:
        """vLLM's signature: one expert's shard ("w1" gate, "w3" up, "w2" down)."""
        self.load_expert(expert_id, shard_id, loaded_weight, weight_name)

    def load_expert(self, expert: int, shard: str, tensor: torch.Tensor,
                    name: str = "") -> None:
        if not 0 <= expert < self.num_experts:
            raise ValueError(f"checkpoint {name or 'tensor'} is expert {expert}, but "
                             f"{self.prefix or 'the layer'} has {self.num_experts} experts")
        full, k = self.full_intermediate_size, self.hidden_size
        expected = (k, full) if shard == "w2" else (full, k)
        if tuple(tensor.shape) != expected:
            raise ValueError(f"checkpoint {name or shard} has shape {tuple(tensor.shape)}, "
                             f"expected {expected} (hidden {k}, expert intermediate {full})")
        n = self.intermediate_size
        if self.tp_size > 1:  # this rank's slice of the intermediate dimension
            start = self.tp_rank * n
            if isinstance(tensor, QuantizedWeight):
                tensor = (tensor.column_range(start, n) if shard == "w2"
                          else tensor.row_range(start, n))
            else:
                tensor = tensor.narrow(1 if shard == "w2" else 0, start, n)
        if isinstance(tensor, QuantizedWeight):  # packed with the others after loading
            self._quantized[expert, shard] = tensor
            self._loaded.add((expert, shard))
            return
        if shard == "w2":
            self.w2_weight.data[expert].copy_(tensor)
        else:
            start = 0 if shard == "w1" else n
            self.w13_weight.data[expert, start:start + n].copy_(tensor)
        self._loaded.add((expert, shard))

    def load_stacked(self, leaf: str, tensor: torch.Tensor, name: str) -> None:
        """transformers' stacked experts: gate_up_proj [E, 2N, K] or down_proj [E, K, N]."""
        param = self.w13_weight if leaf == "gate_up_proj" else self.w2_weight
        e, k, full, n = (self.num_experts, self.hidden_size, self.full_intermediate_size,
                         self.intermediate_size)
        expected = (e, 2 * full, k) if leaf == "gate_up_proj" else (e, k, full)
        if tuple(tensor.shape) != expected:
            raise ValueError(f"checkpoint {name} has shape {tuple(tensor.shape)}, "
                             f"expected {expected}")
        if self.tp_size > 1:  # this rank's rows of gate and of up, or columns of down
            start = self.tp_rank * n
            tensor = (torch.cat([tensor[:, start:start + n], tensor[:, full + start:full + start + n]],
                                dim=1)
                      if leaf == "gate_up_proj" else tensor[:, :, start:start + n])
        param.data.copy_(tensor)
        shards = ("w1", "w3") if leaf == "gate_up_proj" else ("w2",)
        self._loaded.update((e, s) for e in range(self.num_experts) for s in shards)

    def missing_checkpoint_tensors(self, path: str) -> list[str]:
        """Names of the expert tensors no checkpoint tensor filled; `path`:
        this module's name in the model (the checkpoint's prefix)."""
        missing = []
        for expert in range(self.num_experts):
            for shard in ("w1", "w2", "w3"):
                if (expert, shard) not in self._loaded:
                    leaf = self._checkpoint_leaf.get(shard, shard)
                    missing.append(f"{path}.{expert}.{leaf}.weight")
        return missing

    def all_loaded(self) -> bool:
        return len(self._loaded) == 3 * self.num_experts

    def process_weights_after_loading(self) -> None:
        if self.w13_packed is not None:  # packed already: the plain copies are gone
            return
        if self._quantized:
            self._pack_quantized()
            if self.quantized:
                return
        e, n, k = check_expert_weights(self.w13_weight, self.w2_weight)
        w13 = self.w13_weight
        if not (pairs_apply(w13[0]) and pairs_apply(self.w2_weight[0])):
            return
        shape13 = (e,) + gate_up_packed_shape(2 * n, k)
        shape2 = (e,) + pair_packed_shape(k, n)
        size13 = torch.Size(shape13).numel()
        buffer = hugepages.empty(size13 + torch.Size(shape2).numel(), dtype=w13.dtype)
        self.w13_packed = buffer[:size13].view(shape13)
        self.w2_packed = buffer[size13:].view(shape2)
        for expert in range(e):
            pack_gate_up_pairs(w13[expert], self.w13_packed[expert])
            pack_weight_pairs(self.w2_weight[expert], self.w2_packed[expert])
        # the packed copy is the weights now: free the plain ones (the
        # parameters stay, empty, so the module's structure does not change)
        self.w13_weight.data = w13.new_empty(0)
        self.w2_weight.data = w13.new_empty(0)

    def _pack_quantized(self) -> None:
        """Every expert's quantized w1/w3 (stacked, as Linear does gate/up)
        and w2 packed for quant_linear, in two [E, ...] uint8 stacks on huge
        pages; the dense parameters keep their shapes only. Where that
        cannot be (some shards dense, act-order inputs, experts stored in
        differing types, no quantized kernel here) every quantized shard is
        dequantized into the dense weights instead."""
        held, self._quantized = self._quantized, {}
        e, k, n = self.num_experts, self.hidden_size, self.intermediate_size
        packable = len(held) == 3 * e and ops.quant_linear_available() and all(
            q.input_order is None for q in held.values())
        if packable:
            parts13 = [concat_rows([held[x, "w1"], held[x, "w3"]]) for x in range(e)]
            parts2 = [held[x, "w2"] for x in range(e)]
            # one stack each: every expert in one format the kernel takes
            packable = all(
                len({(p.bits, p.group_size) for p in parts}) == 1
                and packed_supported(inputs, parts[0].group_size)
                for parts, inputs in ((parts13, k), (parts2, n)))
        if not packable:
            logger.warning("%s: quantized experts dequantized at load (some shards dense, "
                           "act-order, mixed types or no quantized kernel here)",
                           self.prefix or "FusedMoE")
            for (expert, shard), q in held.items():
                dense = q.dequantize(self.w2_weight.dtype)
                if shard == "w2":
                    self.w2_weight.data[expert].copy_(dense)
                else:
                    start = 0 if shard == "w1" else n
                    self.w13_weight.data[expert, start:start + n].copy_(dense)
            return
        packed13 = [pack_quantized(p) for p in parts13]
        packed2 = [pack_quantized(p) for p in parts2]
        size13, size2 = packed13[0].numel(), packed2[0].numel()
        buffer = hugepages.empty(e * (size13 + size2), dtype=torch.uint8)
        self.w13_packed = buffer[:e * size13].view((e,) + tuple(packed13[0].shape))
        self.w2_packed = buffer[e * size13:].view((e,) + tuple(packed2[0].shape))
        for expert in range(e):
            self.w13_packed[expert].copy_(packed13[expert])
            self.w2_packed[expert].copy_(packed2[expert])
        self.w13_weight.data = shape_only(self.w13_weight)
        self.w2_weight.data = shape_only(self.w2_weight)
        self.quantized = True

    def plain_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """w13 [E, 2N, K] and w2 [E, K, N] as loaded (unpacked again once
        packed: a slow path for kernel variants without packed GEMMs)."""
        if self.w13_packed is None:
            return self.w13_weight, self.w2_weight
        n, k = self.intermediate_size, self.hidden_size
        w13 = torch.stack([unpack_gate_up_pairs(p, n) for p in self.w13_packed])
        w2 = torch.stack([unpack_weight_pairs(p, k) for p in self.w2_packed])
        return w13, w2

    # ------------------------------------------------------------ compute
    def forward(self, hidden_states: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        out = self._experts(hidden_states, router_logits)
        if self.reduce_results:
            from vllm.distributed.communication_op import reduce_over_tensor_ranks
            out = reduce_over_tensor_ranks(out)
        return out

    def _experts(self, hidden_states: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        """This rank's part: with tensor parallelism a partial sum."""
        if hidden_states.shape[0] == 0:  # a step whose last layer serves no output row
            return torch.empty_like(hidden_states)
        weights, ids = select_experts(hidden_states, router_logits, self.top_k, self.renormalize,
                                      self.use_grouped_topk, self.num_expert_group,
                                      self.topk_group, self.custom_routing_function,
                                      self.scoring_func, self.routed_scaling_factor,
                                      self.e_score_correction_bias)
        if self.quantized:  # each chosen expert through quant_linear
            return fused_experts(hidden_states, self.w13_weight, self.w2_weight, weights, ids,
                                 activation=self.activation,
                                 apply_router_weight_on_input=self.apply_router_weight_on_input,
                                 w1_packed=self.w13_packed, w2_packed=self.w2_packed)
        if (self.w13_packed is not None and hidden_states.dtype == torch.bfloat16
                and hidden_states.dim() == 2 and ops.packed_moe_available()):
            out = torch.empty_like(hidden_states)
            x = hidden_states if hidden_states.stride(1) == 1 else hidden_states.contiguous()
            if self.apply_router_weight_on_input:  # top-1: scale the input, weight 1 after
                x = (x * weights).to(x.dtype)
                weights = torch.ones_like(weights)
            ops.packed_moe_experts(out, x, self.w13_packed, self.w2_packed,
                                   weights.float().contiguous(),
                                   ids.to(torch.int32).contiguous(), self.act.name)
            return out
        # fp32, or a kernel variant without packed GEMMs (the packed experts
        # then unpacked: a slow path): the grouped pass
        w13, w2 = self.plain_weights()
        return fused_experts(hidden_states, w13, w2, weights, ids,
                             activation=self.activation,
                             apply_router_weight_on_input=self.apply_router_weight_on_input,
                             w1_packed=self.w13_packed, w2_packed=self.w2_packed)


def load_expert_checkpoint_tensor(name: str, tensor: torch.Tensor,
                                  modules: dict[str, nn.Module]) -> str | None:
    """Routes a checkpoint tensor of a FusedMoE's experts into it; returns
    the FusedMoE's module path, or None if `name` is not an expert tensor."""
    match = _PER_EXPERT.match(name)
    if match and isinstance(modules.get(match["moe"]), FusedMoE) and match["leaf"] in _SHARD_OF:
        moe = modules[match["moe"]]
        shard = _SHARD_OF[match["leaf"]]
        moe._checkpoint_leaf[shard] = match["leaf"]
        moe.load_expert(int(match["expert"]), shard, tensor, name)
        return match["moe"]
    match = _STACKED.match(name)
    if match and isinstance(modules.get(match["moe"]), FusedMoE):
        modules[match["moe"]].load_stacked(match["leaf"], tensor, name)
        return match["moe"]
    return None
