"""AWQ (GEMM version) dequantize and GEMM in Triton, used by
`_custom_ops.awq_dequantize` / `awq_gemm` when VLLM_USE_TRITON_AWQ=1.

The weight stays as the checkpoint stores it: qweight int32 [k, n / 8],
each word holding 8 columns' 4-bit values with column c in nibble
(c % 2) * 4 + c // 2 (AWQ's 0, 2, 4, 6, 1, 3, 5, 7 packing order), qzeros
int32 [k / g, n / 8] packed alike, scales [k / g, n]; w = (q - z) s.
Each program unpacks the tile it needs in registers: the GEMM never
writes a dequantized weight. Split-k programs write partial sums that a
final sum adds.

Runs on GPUs; on CPU tensors under TRITON_INTERPRET=1, how the tests check
it against dequantize-then-matmul in PyTorch."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _awq_unpack(words, cols):
    """4-bit values of `words` (loaded per column) for columns `cols`."""
    within = cols % 8
    shift = ((within % 2) * 4 + within // 2) * 4
    return (words >> shift) & 0xF


@triton.jit
def _awq_dequantize_kernel(qweight_ptr, scales_ptr, zeros_ptr, out_ptr, K, N, GROUP,
                           BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_k[:, None] < K) & (offs_n[None, :] < N)
    words = tl.load(qweight_ptr + offs_k[:, None] * (N // 8) + offs_n[None, :] // 8, mask=mask,
                    other=0)
    groups = offs_k // GROUP
    zero_words = tl.load(zeros_ptr + groups[:, None] * (N // 8) + offs_n[None, :] // 8,
                         mask=mask, other=0)
    scales = tl.load(scales_ptr + groups[:, None] * N + offs_n[None, :], mask=mask, other=0.0)
    q = _awq_unpack(words, offs_n[None, :])
    z = _awq_unpack(zero_words, offs_n[None, :])
    w = (q - z).to(tl.float32) * scales.to(tl.float32)
    tl.store(out_ptr + offs_k[:, None] * N + offs_n[None, :], w.to(out_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _awq_gemm_kernel(a_ptr, qweight_ptr, scales_ptr, zeros_ptr, partial_ptr, M, N, K, GROUP,
                     stride_am, stride_ak, K_PER_SPLIT,
                     UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr):
    pid_m, pid_n, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask, n_mask = offs_m < M, offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_start = split * K_PER_SPLIT
    for k0 in range(k_start, tl.minimum(k_start + K_PER_SPLIT, K), BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak,
                    mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        b_mask = k_mask[:, None] & n_mask[None, :]
        words = tl.load(qweight_ptr + offs_k[:, None] * (N // 8) + offs_n[None, :] // 8,
                        mask=b_mask, other=0)
        groups = offs_k // GROUP
        zero_words = tl.load(zeros_ptr + groups[:, None] * (N // 8) + offs_n[None, :] // 8,
                             mask=b_mask, other=0)
        scales = tl.load(scales_ptr + groups[:, None] * N + offs_n[None, :], mask=b_mask,
                         other=0.0)
        q = _awq_unpack(words, offs_n[None, :])
        z = _awq_unpack(zero_words, offs_n[None, :])
        b = ((q - z).to(tl.float32) * scales.to(tl.float32))
        if UPCAST:  # the interpreter's tl.dot is wrong on 16-bit operands
            acc += tl.dot(a.to(tl.float32), b)
        else:
            acc += tl.dot(a, b.to(a.dtype))
    tl.store(partial_ptr + split * M * N + offs_m[:, None] * N + offs_n[None, :], acc,
             mask=m_mask[:, None] & n_mask[None, :])


def _check(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> tuple[int, int, int]:
    k, n = qweight.shape[0], qweight.shape[1] * 8
    if scales.shape[1] != n or k % scales.shape[0] or zeros.shape != (scales.shape[0], n // 8):
        raise ValueError(f"AWQ tensors disagree: qweight {tuple(qweight.shape)}, scales "
                         f"{tuple(scales.shape)}, qzeros {tuple(zeros.shape)}")
    return k, n, k // scales.shape[0]


def awq_dequantize_triton(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                          block_size_x: int = 32, block_size_y: int = 32) -> torch.Tensor:
    """The AWQ weight [k, n] in scales' dtype."""
    k, n, group = _check(qweight, scales, zeros)
    out = torch.empty(k, n, dtype=scales.dtype, device=qweight.device)
    grid = (triton.cdiv(k, block_size_y), triton.cdiv(n, block_size_x))
    _awq_dequantize_kernel[grid](qweight, scales, zeros, out, k, n, group,
                                 BLOCK_K=block_size_y, BLOCK_N=block_size_x)
    return out


def awq_gemm_triton(input: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                    qzeros: torch.Tensor, split_k_iters: int = 1, block_size_m: int = 32,
                    block_size_n: int = 32, block_size_k: int = 32) -> torch.Tensor:
    """input [m, k] @ the AWQ weight [k, n], in input's dtype; `split_k_iters`
    programs share each output tile's k range."""
    k, n, group = _check(qweight, scales, qzeros)
    if input.shape[-1] != k:
        raise ValueError(f"input has {input.shape[-1]} columns, the AWQ weight {k} inputs")
    x = input.reshape(-1, k)
    m = x.shape[0]
    splits = max(1, split_k_iters)
    k_per_split = triton.cdiv(triton.cdiv(k, splits), block_size_k) * block_size_k
    partial = torch.zeros(splits, m, n, dtype=torch.float32, device=input.device)
    grid = (triton.cdiv(m, block_size_m), triton.cdiv(n, block_size_n), splits)
    _awq_gemm_kernel[grid](x, qweight, scales, qzeros, partial, m, n, k, group,
                           x.stride(0), x.stride(1), k_per_split,
                           UPCAST=input.device.type == "cpu", BLOCK_M=block_size_m,
                           BLOCK_N=block_size_n, BLOCK_K=block_size_k)
    return partial.sum(0).to(input.dtype).view(*input.shape[:-1], n)
