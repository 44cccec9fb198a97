"""The fused MoE GEMM in Triton (vLLM's design): the (token, choice) pairs
sorted by expert and padded to blocks of BLOCK_M (moe_align_block_size), one
program per (block of pairs, tile of BLOCK_N outputs) multiplying its pairs'
rows by its block's expert. Two launches make a layer: x @ W13_e^T into a
[M * k, 2N] cache, the activation, then @ W2_e^T times the routing weight
into a [M * k, K] cache, summed over each token's k choices (moe_sum).

Runs on GPUs; on CPU tensors under TRITON_INTERPRET=1, how the tests check
it against a per-expert float64 loop."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _fused_moe_kernel(
    a_ptr, b_ptr, c_ptr, weights_ptr, sorted_ids_ptr, expert_ids_ptr, post_pad_ptr,
    N, K, num_valid,
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_cm, stride_cn,
    A_ROWS_PER_PAIR: tl.constexpr, MUL_WEIGHT: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if pid_m * BLOCK_M >= tl.load(post_pad_ptr):
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ids_ptr + offs_m).to(tl.int64)
    valid = pair < num_valid
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    c_ptrs = c_ptr + pair[:, None] * stride_cm + offs_n[None, :] * stride_cn
    if expert < 0:  # an expert on another rank (expert_map): adds nothing
        tl.store(c_ptrs, tl.zeros((BLOCK_M, BLOCK_N), dtype=c_ptr.dtype.element_ty),
                 mask=valid[:, None] & n_mask[None, :])
        return
    # the first GEMM reads token pair // k of x; the second row `pair` of its input
    rows = pair // A_ROWS_PER_PAIR
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, tl.cdiv(K, BLOCK_K)):
        offs_k = k0 * BLOCK_K + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        a = tl.load(a_ptr + rows[:, None] * stride_am + offs_k[None, :] * stride_ak,
                    mask=valid[:, None] & k_mask[None, :], other=0.0)
        b = tl.load(b_ptr + expert * stride_be + offs_k[:, None] * stride_bk
                    + offs_n[None, :] * stride_bn,
                    mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if UPCAST:  # the interpreter's tl.dot is wrong on 16-bit operands
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc += tl.dot(a, b)
    if MUL_WEIGHT:
        w = tl.load(weights_ptr + pair, mask=valid, other=0.0)
        acc = acc * w[:, None]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None] & n_mask[None, :])


def invoke_fused_moe_kernel(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                            topk_weights: torch.Tensor | None, sorted_ids: torch.Tensor,
                            expert_ids: torch.Tensor, num_tokens_post_pad: torch.Tensor,
                            a_rows_per_pair: int, config: dict) -> None:
    """c[pair] = a[pair // a_rows_per_pair] @ b[expert(pair)]^T (times
    topk_weights[pair] if given), for every valid pair in sorted_ids.
    b [E, N, K]; c [M * k, N]."""
    n, k = b.shape[1], b.shape[2]
    block_m = config["BLOCK_SIZE_M"]
    grid = (triton.cdiv(sorted_ids.numel(), block_m), triton.cdiv(n, config["BLOCK_SIZE_N"]))
    launch = {key: config[key] for key in ("num_warps", "num_stages") if key in config}
    _fused_moe_kernel[grid](
        a, b, c, topk_weights if topk_weights is not None else c, sorted_ids, expert_ids,
        num_tokens_post_pad, n, k, c.shape[0],
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), b.stride(2), c.stride(0),
        c.stride(1),
        A_ROWS_PER_PAIR=a_rows_per_pair, MUL_WEIGHT=topk_weights is not None,
        UPCAST=a.device.type == "cpu",
        BLOCK_M=block_m, BLOCK_N=config["BLOCK_SIZE_N"], BLOCK_K=config["BLOCK_SIZE_K"],
        **launch)
