"""fused_experts on the Triton fused-MoE GEMM (vllm.triton_ops.fused_moe):
the path for GPUs, and for CPU tensors under TRITON_INTERPRET=1 (tests).

Block sizes come from a JSON file per (E, N, dtype, device) in configs/,
named as vLLM names them ("E=8,N=14336,device_name=NVIDIA_H200.json", plus
",dtype=..." for other dtypes than 16-bit), keyed by batch size; the entry
for the nearest batch size is used. Without a file, vLLM's defaults."""
from __future__ import annotations

import functools
import json
import logging
import os

import torch

from vllm import _custom_ops as ops
from vllm.model_executor.layers.fused_moe.moe_align import moe_align_block_size

logger = logging.getLogger(__name__)

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def config_file_name(e: int, n: int, device_name: str, dtype: str | None = None) -> str:
    name = f"E={e},N={n},device_name={device_name.replace(' ', '_')}"
    return name + (f",dtype={dtype}" if dtype else "") + ".json"


@functools.lru_cache
def _tuned_configs(e: int, n: int, device_name: str, dtype: str | None) -> dict | None:
    path = os.path.join(CONFIG_DIR, config_file_name(e, n, device_name, dtype))
    if not os.path.isfile(path):
        logger.info("no tuned fused-MoE config %s: using the default block sizes",
                    os.path.basename(path))
        return None
    with open(path) as f:
        return {int(m): config for m, config in json.load(f).items()}


def default_config(m: int, e: int) -> dict:
    if m <= e:  # few pairs per expert: short blocks
        return {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64}
    return {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32}


def get_config(m: int, e: int, n: int, device: torch.device, dtype: str | None = None) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    tuned = _tuned_configs(e, n, name, dtype)
    if tuned:
        return tuned[min(tuned, key=lambda batch: abs(batch - m))]
    return default_config(m, e)


def fused_experts_triton(hidden_states: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                         topk_weights: torch.Tensor, topk_ids: torch.Tensor, act,
                         apply_router_weight_on_input: bool = False,
                         expert_map: torch.Tensor | None = None,
                         global_num_experts: int = -1) -> torch.Tensor:
    """One chunk of tokens through their experts: [M, K] -> [M, K].
    topk_ids are global expert ids; `expert_map` maps them to w1/w2's."""
    from vllm.triton_ops.fused_moe import invoke_fused_moe_kernel
    m, k_dim = hidden_states.shape
    e, n = w1.shape[0], w1.shape[1] // 2
    topk = topk_ids.shape[1]
    config = get_config(m, e, n, hidden_states.device)
    sorted_ids, expert_ids, post_pad = moe_align_block_size(
        topk_ids, config["BLOCK_SIZE_M"], global_num_experts if global_num_experts > 0 else e,
        expert_map)
    weights = topk_weights.reshape(-1).float().contiguous()
    gate_up = torch.empty(m * topk, 2 * n, dtype=hidden_states.dtype,
                          device=hidden_states.device)
    invoke_fused_moe_kernel(hidden_states, w1, gate_up,
                            weights if apply_router_weight_on_input else None, sorted_ids,
                            expert_ids, post_pad, topk, config)
    down = torch.empty(m * topk, k_dim, dtype=hidden_states.dtype, device=hidden_states.device)
    invoke_fused_moe_kernel(act(gate_up), w2, down,
                            None if apply_router_weight_on_input else weights, sorted_ids,
                            expert_ids, post_pad, 1, config)
    out = torch.empty_like(hidden_states)
    if ops.has_kernel("_moe_C::moe_sum", hidden_states.device):
        ops.moe_sum(down.view(m, topk, k_dim), out)
    else:
        out.copy_(down.view(m, topk, k_dim).float().sum(1))
    return out
