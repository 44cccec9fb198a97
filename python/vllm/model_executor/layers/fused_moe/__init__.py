"""Mixture-of-experts layers and kernels, under vLLM's names."""
from vllm.model_executor.layers.fused_moe.experts import fused_experts, fused_moe
from vllm.model_executor.layers.fused_moe.layer import FusedMoE
from vllm.model_executor.layers.fused_moe.moe_align import moe_align_block_size
from vllm.model_executor.layers.fused_moe.routing import fused_topk, grouped_topk, select_experts

__all__ = ["FusedMoE", "fused_experts", "fused_moe", "fused_topk", "grouped_topk",
           "moe_align_block_size", "select_experts"]
