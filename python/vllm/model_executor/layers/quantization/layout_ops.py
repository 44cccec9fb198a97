"""vLLM's quantized-GEMM ops on CPU, on weights as checkpoints store them
(AWQ, GPTQ, raw GGUF blocks): each call converts the weight into our
QuantizedWeight form and runs our kernel (`_C::quant_linear`, x rounded
to int8 per 32 values as llama.cpp and vLLM's GGUF "a8" kernels do). The
conversion streams the weight once more per call: code that calls these
in a loop should load the layer once instead (Linear.load), which the
engine does. Exposed as `vllm._custom_ops.<name>` with vLLM's
signatures."""
from __future__ import annotations

import torch

from vllm.model_executor.layers.quantization.awq import awq_quantized, unpack_awq
from vllm.model_executor.layers.quantization.gptq import gptq_dequantized, gptq_quantized
from vllm.model_executor.layers.quantization.int32_packing import unpack_words
from vllm.model_executor.layers.quantization.packing import (QuantizedWeight, pack_quantized,
                                                             packed_supported)

# ggml's type numbers (ggml.h, enum ggml_type) for the block types we read
GGML_TYPES = {2: "Q4_0", 3: "Q4_1", 8: "Q8_0", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K"}


def _matmul(x: torch.Tensor, weight: QuantizedWeight) -> torch.Tensor:
    """x [..., k] @ weight.T by our kernel (a dense fallback where it cannot run)."""
    from vllm import _custom_ops as ops  # here: _custom_ops imports this module's callers
    n, k = weight.shape
    rows = x.reshape(-1, k)
    if weight.input_order is not None:
        rows = rows.index_select(1, weight.input_order)
    if not (ops.quant_linear_available() and packed_supported(k, weight.group_size)):
        dense = weight.dequantize(torch.float32)
        return (x.reshape(-1, k).float() @ dense.T).to(x.dtype).view(*x.shape[:-1], n)
    out = torch.empty(rows.shape[0], n, dtype=x.dtype, device=x.device)
    ops.quant_linear(out, rows.contiguous(), pack_quantized(weight), weight.bits,
                     weight.group_size, None)
    return out.view(*x.shape[:-1], n)


def awq_dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                   split_k_iters: int = 0, thx: int = 0, thy: int = 0) -> torch.Tensor:
    """The AWQ weight [k, n] in scales' dtype: (q - z) s per group."""
    g = qweight.shape[0] // scales.shape[0]
    q = unpack_awq(qweight)
    z = unpack_awq(zeros).repeat_interleave(g, dim=0)
    return (q - z).to(scales.dtype) * scales.repeat_interleave(g, dim=0)


def awq_gemm(input: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
             qzeros: torch.Tensor, split_k_iters: int = 0) -> torch.Tensor:
    """input [m, k] @ the AWQ weight [k, n] (split_k_iters: a CUDA tiling
    choice, unused here)."""
    group = qweight.shape[0] // scales.shape[0]
    return _matmul(input, awq_quantized("awq_gemm", qweight, qzeros, scales, group))


def gptq_shuffle(q_weight: torch.Tensor, q_perm: torch.Tensor, bit: int) -> None:
    """In place, as vLLM's exllama preparation: q_weight's inputs reordered
    by q_perm (argsort of g_idx, for act-order; empty: no reorder), so a
    group's inputs are contiguous. gptq_gemm then takes q_perm as its
    b_g_idx with use_exllama."""
    if q_perm.numel() == 0:
        return
    values = unpack_words(q_weight, bit, dim=0)[q_perm.long()]  # [k, n]
    per_word = 32 // bit
    k, n = values.shape
    words = torch.zeros(k // per_word, n, dtype=torch.int64)
    for t in range(per_word):
        words |= values[t::per_word].to(torch.int64) << (t * bit)
    # back to int32 words: a top value's high bit is the sign, as stored
    q_weight.copy_((words - ((words >> 31) << 32)).to(torch.int32))


def gptq_gemm(a: torch.Tensor, b_q_weight: torch.Tensor, b_gptq_qzeros: torch.Tensor,
              b_gptq_scales: torch.Tensor, b_g_idx: torch.Tensor, use_exllama: bool,
              use_v2_format: bool, bit: int) -> torch.Tensor:
    """a [m, k] @ the GPTQ weight. With use_exllama the weight is as
    gptq_shuffle left it: groups contiguous, b_g_idx the input order (or
    empty); without, b_g_idx holds each input's group (or is empty). v1
    zeros are the stored ones plus one."""
    groups = b_gptq_scales.shape[0]
    k = b_q_weight.shape[0] * (32 // bit)
    order = None
    if use_exllama or b_g_idx.numel() == 0:
        if use_exllama and b_g_idx.numel():
            order = b_g_idx.long()
        g_idx = torch.arange(k) // (k // groups)
    else:
        g_idx = b_g_idx
    group_size = -1 if groups == 1 else k // groups
    args = ("gptq_gemm", b_q_weight, b_gptq_qzeros, b_gptq_scales, g_idx.to(torch.int32), bit,
            group_size, not use_v2_format)
    weight = gptq_quantized(*args)
    if weight is None:
        dense = gptq_dequantized(*args)
        x = a if order is None else a.index_select(-1, order)
        return (x.float() @ dense.T).to(a.dtype)
    if order is not None:  # shuffled: the rows are sorted by group already
        weight.input_order = order
    return _matmul(a, weight)


def _gguf_weight(W: torch.Tensor, quant_type: int, n: int, k: int) -> QuantizedWeight:
    from vllm.model_executor.layers.quantization.gguf import gguf_quantized
    if quant_type not in GGML_TYPES:
        raise ValueError(f"GGML type {quant_type} is not supported; supported: "
                         + ", ".join(f"{t} ({name})" for t, name in GGML_TYPES.items()))
    return gguf_quantized(W.cpu().numpy(), GGML_TYPES[quant_type], n, k)


def ggml_dequantize(W: torch.Tensor, quant_type: int, m: int, n: int,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """The GGUF weight W (raw blocks, m rows of n weights) as [m, n]."""
    return _gguf_weight(W, quant_type, m, n).dequantize(dtype or torch.float16)


def ggml_mul_mat_vec_a8(W: torch.Tensor, X: torch.Tensor, quant_type: int,
                        row: int) -> torch.Tensor:
    """X [m, k] @ the GGUF weight W ([row, bytes], raw blocks).T, X rounded
    to int8 per 32 values (vLLM's decode-sized GGUF op)."""
    return _matmul(X, _gguf_weight(W, quant_type, row, X.shape[-1]))


def ggml_mul_mat_a8(W: torch.Tensor, X: torch.Tensor, quant_type: int, row: int) -> torch.Tensor:
    """As ggml_mul_mat_vec_a8, for any number of rows of X (vLLM's batched op)."""
    return _matmul(X, _gguf_weight(W, quant_type, row, X.shape[-1]))
