"""Typed Python wrappers over torch.ops._C: the one door to the kernels.

Names and argument order follow vLLM's _custom_ops. Each op also gets a fake
(meta) implementation so torch.compile and torch.library.opcheck can trace it.
"""
from __future__ import annotations

import torch

from vllm import envs

try:
    from vllm import _C  # registers torch.ops._C.*
except ImportError as exc:  # pure-Python builds (openvino, tpu, ...)
    _C = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None


def _apply_cpu_isa_choice() -> None:
    """Honour VLLM_CPU_ISA (auto/avx512/avx2/scalar) once, at import."""
    if _C is not None and hasattr(_C, "set_cpu_isa"):
        _C.set_cpu_isa(envs.VLLM_CPU_ISA)


_apply_cpu_isa_choice()


def cpu_isa() -> str | None:
    """The CPU kernel variant in use, or None without CPU kernels."""
    return _C.cpu_isa() if _C is not None and hasattr(_C, "cpu_isa") else None


# ---------------------------------------------------------------- layernorm
def rms_norm(out: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
             epsilon: float) -> None:
    torch.ops._C.rms_norm(out, input, weight, epsilon)


def fused_add_rms_norm(input: torch.Tensor, residual: torch.Tensor,
                       weight: torch.Tensor, epsilon: float) -> None:
    torch.ops._C.fused_add_rms_norm(input, residual, weight, epsilon)


# ---------------------------------------------------------------- activation
def silu_and_mul(out: torch.Tensor, x: torch.Tensor) -> None:
    torch.ops._C.silu_and_mul(out, x)


def gelu_and_mul(out: torch.Tensor, x: torch.Tensor) -> None:
    torch.ops._C.gelu_and_mul(out, x)


def gelu_tanh_and_mul(out: torch.Tensor, x: torch.Tensor) -> None:
    torch.ops._C.gelu_tanh_and_mul(out, x)


def gelu_new(out: torch.Tensor, x: torch.Tensor) -> None:
    torch.ops._C.gelu_new(out, x)


def gelu_fast(out: torch.Tensor, x: torch.Tensor) -> None:
    torch.ops._C.gelu_fast(out, x)


def gelu_quick(out: torch.Tensor, x: torch.Tensor) -> None:
    torch.ops._C.gelu_quick(out, x)


# ---------------------------------------------------------------- rotary
def rotary_embedding(positions: torch.Tensor, query: torch.Tensor,
                     key: torch.Tensor | None, head_size: int,
                     cos_sin_cache: torch.Tensor, is_neox: bool) -> None:
    torch.ops._C.rotary_embedding(positions, query, key, head_size,
                                  cos_sin_cache, is_neox)


# ---------------------------------------------------------------- kv cache
def reshape_and_cache(key: torch.Tensor, value: torch.Tensor,
                      key_cache: torch.Tensor, value_cache: torch.Tensor,
                      slot_mapping: torch.Tensor, kv_cache_dtype: str,
                      k_scale: torch.Tensor, v_scale: torch.Tensor) -> None:
    torch.ops._C.reshape_and_cache(key, value, key_cache, value_cache,
                                   slot_mapping, kv_cache_dtype, k_scale, v_scale)


def copy_blocks(key_caches: list[torch.Tensor], value_caches: list[torch.Tensor],
                block_mapping: torch.Tensor) -> None:
    torch.ops._C.copy_blocks(key_caches, value_caches, block_mapping)


def swap_blocks(src: torch.Tensor, dst: torch.Tensor,
                block_mapping: torch.Tensor) -> None:
    torch.ops._C.swap_blocks(src, dst, block_mapping)


def concat_and_cache_mla(kv_c: torch.Tensor, k_pe: torch.Tensor, kv_cache: torch.Tensor,
                         slot_mapping: torch.Tensor, kv_cache_dtype: str,
                         scale: torch.Tensor) -> None:
    """MLA: each token's latent kv_c then its rotated k_pe into its slot of
    the latent cache [num_blocks, block_size, kv_lora_rank + rope_dim]."""
    torch.ops._C.concat_and_cache_mla(kv_c, k_pe, kv_cache, slot_mapping, kv_cache_dtype, scale)


# ---------------------------------------------------------------- attention
def mla_decode_kvcache(out: torch.Tensor, query: torch.Tensor, kv_cache: torch.Tensor,
                       scale: float, block_tables: torch.Tensor,
                       seq_lens: torch.Tensor) -> None:
    """Absorbed MLA decode: one query per sequence over its cached latents."""
    torch.ops._C.mla_decode_kvcache(out, query, kv_cache, scale, block_tables, seq_lens)


def mla_prefill_kvcache(out: torch.Tensor, query: torch.Tensor, kv_cache: torch.Tensor,
                        scale: float, block_tables: torch.Tensor,
                        query_start_loc: torch.Tensor, seq_lens: torch.Tensor) -> None:
    """Absorbed MLA over any step's queries (prefill chunks included)."""
    torch.ops._C.mla_prefill_kvcache(out, query, kv_cache, scale, block_tables,
                                     query_start_loc, seq_lens)


PARTITION_SIZE = 512  # context tokens per paged_attention_v2 partition


def paged_attention_v1(out: torch.Tensor, query: torch.Tensor, key_cache: torch.Tensor,
                       value_cache: torch.Tensor, num_kv_heads: int, scale: float,
                       block_tables: torch.Tensor, seq_lens: torch.Tensor,
                       block_size: int, max_seq_len: int,
                       alibi_slopes: torch.Tensor | None, kv_cache_dtype: str,
                       k_scale: torch.Tensor, v_scale: torch.Tensor, tp_rank: int = 0,
                       blocksparse_local_blocks: int = 0, blocksparse_vert_stride: int = 0,
                       blocksparse_block_size: int = 0,
                       blocksparse_head_sliding_step: int = 0) -> None:
    torch.ops._C.paged_attention_v1(
        out, query, key_cache, value_cache, num_kv_heads, scale, block_tables, seq_lens,
        block_size, max_seq_len, alibi_slopes, kv_cache_dtype, k_scale, v_scale, tp_rank,
        blocksparse_local_blocks, blocksparse_vert_stride, blocksparse_block_size,
        blocksparse_head_sliding_step)


def paged_attention_v2(out: torch.Tensor, exp_sum: torch.Tensor, max_logits: torch.Tensor,
                       tmp_out: torch.Tensor, query: torch.Tensor, key_cache: torch.Tensor,
                       value_cache: torch.Tensor, num_kv_heads: int, scale: float,
                       block_tables: torch.Tensor, seq_lens: torch.Tensor,
                       block_size: int, max_seq_len: int,
                       alibi_slopes: torch.Tensor | None, kv_cache_dtype: str,
                       k_scale: torch.Tensor, v_scale: torch.Tensor, tp_rank: int = 0,
                       blocksparse_local_blocks: int = 0, blocksparse_vert_stride: int = 0,
                       blocksparse_block_size: int = 0,
                       blocksparse_head_sliding_step: int = 0) -> None:
    torch.ops._C.paged_attention_v2(
        out, exp_sum, max_logits, tmp_out, query, key_cache, value_cache, num_kv_heads,
        scale, block_tables, seq_lens, block_size, max_seq_len, alibi_slopes,
        kv_cache_dtype, k_scale, v_scale, tp_rank, blocksparse_local_blocks,
        blocksparse_vert_stride, blocksparse_block_size, blocksparse_head_sliding_step)


def paged_attention_prefill(out: torch.Tensor, query: torch.Tensor,
                            key_cache: torch.Tensor, value_cache: torch.Tensor,
                            num_kv_heads: int, scale: float, block_tables: torch.Tensor,
                            query_start_loc: torch.Tensor, seq_lens: torch.Tensor,
                            alibi_slopes: torch.Tensor | None, kv_cache_dtype: str,
                            k_scale: torch.Tensor, v_scale: torch.Tensor) -> None:
    torch.ops._C.paged_attention_prefill(
        out, query, key_cache, value_cache, num_kv_heads, scale, block_tables,
        query_start_loc, seq_lens, alibi_slopes, kv_cache_dtype, k_scale, v_scale)


# ---------------------------------------------------------------- linear (CPU)
def small_m_linear(out: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None = None) -> None:
    """out = input @ weight.T (+ bias) for a few input rows (decode), streaming
    the weights at memory bandwidth; CPU builds only."""
    torch.ops._C.small_m_linear(out, input, weight, bias)


def packed_linear(out: torch.Tensor, input: torch.Tensor, packed: torch.Tensor,
                  bias: torch.Tensor | None = None) -> None:
    """bf16 out = input @ W.T (+ bias), W packed by
    `vllm.model_executor.layers.linear.pack_weight_pairs`; CPU builds whose
    active kernel variant has it (AVX512-BF16 or AVX2:
    `packed_linear_available()`)."""
    torch.ops._C.packed_linear(out, input, packed, bias)


def packed_linear_gated(out: torch.Tensor, input: torch.Tensor, packed: torch.Tensor,
                        bias: torch.Tensor | None, activation: str) -> None:
    """bf16 out = act(input @ W_gate.T) * (input @ W_up.T) (+ biases), the
    gate/up projection of a gated MLP and its activation in one pass, on
    [W_gate; W_up] packed by `pack_gate_up_pairs` (each half as for
    `packed_linear`, panels interleaved); out is [m, d]. `activation`: silu, gelu or
    gelu_pytorch_tanh. Same bits as packed_linear then the *_and_mul op."""
    torch.ops._C.packed_linear_gated(out, input, packed, bias, activation)


def packed_linear_available() -> bool:
    """Whether packed_linear runs here: a CPU build, and the active kernel
    variant (`cpu_isa()`) is AVX-512 with BF16 or AVX2 (not scalar)."""
    return _C is not None and hasattr(_C, "packed_linear_available") and _C.packed_linear_available()


# quant_linear's default int8_max_rows (the op's own): int8 x at every row
# count. Measured (bench/RESULTS.md, session 12), the int8 path beats our
# bf16 GEMM at 1-512 rows on AVX-512 (VNNI) and AVX2; the bf16-expanding
# path is for steps that hold a prompt (accuracy: linear.quant_int8_max_rows).
QUANT_INT8_MAX_ROWS = 1 << 30


def quant_linear(out: torch.Tensor, input: torch.Tensor, packed: torch.Tensor, bits: int,
                 group_size: int, bias: torch.Tensor | None = None,
                 int8_max_rows: int = QUANT_INT8_MAX_ROWS) -> None:
    """out = input @ W.T (+ bias) on a 4/8-bit weight packed by
    `vllm.model_executor.layers.quantization.packing.pack_quantized` (fp32,
    bf16 or fp16 in and out): input quantized to int8 per 32-block inside;
    or, for bf16 input of more than `int8_max_rows` rows where packed_linear
    runs, the weight expanded to bf16 panel by panel (the dense bf16 bits).
    CPU builds (`quant_linear_available()`)."""
    torch.ops._C.quant_linear(out, input, packed, bits, group_size, bias, int8_max_rows)


def quant_linear_available() -> bool:
    """Whether quant_linear runs here: a CPU build whose active variant has
    it (AVX512-VNNI, AVX2, scalar)."""
    return _C is not None and hasattr(_C, "quant_linear_available") and _C.quant_linear_available()


def awq_dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                   split_k_iters: int = 0, thx: int = 0, thy: int = 0) -> torch.Tensor:
    """vLLM's op: an AWQ weight [k, n] dequantized (in scales' dtype)."""
    if envs.VLLM_USE_TRITON_AWQ:
        from vllm.triton_ops.awq import awq_dequantize_triton
        return awq_dequantize_triton(qweight, scales, zeros)
    if qweight.is_cuda:  # GPU builds: csrc/quantization/awq_kernels.cu
        return torch.ops._C.awq_dequantize(qweight, scales, zeros, split_k_iters, thx, thy)
    from vllm.model_executor.layers.quantization import layout_ops
    return layout_ops.awq_dequantize(qweight, scales, zeros, split_k_iters, thx, thy)


def awq_gemm(input: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
             qzeros: torch.Tensor, split_k_iters: int = 0) -> torch.Tensor:
    """vLLM's op: input @ an AWQ weight (CPU: our quant_linear on it; GPU:
    csrc/quantization/awq_kernels.cu; VLLM_USE_TRITON_AWQ=1: the Triton
    kernels)."""
    if envs.VLLM_USE_TRITON_AWQ:
        from vllm.triton_ops.awq import awq_gemm_triton
        return awq_gemm_triton(input, qweight, scales, qzeros, split_k_iters)
    if input.is_cuda:
        return torch.ops._C.awq_gemm(input, qweight, scales, qzeros, split_k_iters)
    from vllm.model_executor.layers.quantization import layout_ops
    return layout_ops.awq_gemm(input, qweight, scales, qzeros, split_k_iters)


def gptq_gemm(a: torch.Tensor, b_q_weight: torch.Tensor, b_gptq_qzeros: torch.Tensor,
              b_gptq_scales: torch.Tensor, b_g_idx: torch.Tensor, use_exllama: bool,
              use_v2_format: bool, bit: int) -> torch.Tensor:
    """vLLM's op: a @ a GPTQ weight (see layout_ops.gptq_gemm)."""
    from vllm.model_executor.layers.quantization import layout_ops
    return layout_ops.gptq_gemm(a, b_q_weight, b_gptq_qzeros, b_gptq_scales, b_g_idx,
                                use_exllama, use_v2_format, bit)


def gptq_shuffle(q_weight: torch.Tensor, q_perm: torch.Tensor, bit: int) -> None:
    """vLLM's op: a GPTQ weight's inputs reordered in place by q_perm."""
    from vllm.model_executor.layers.quantization import layout_ops
    layout_ops.gptq_shuffle(q_weight, q_perm, bit)


def ggml_dequantize(W: torch.Tensor, quant_type: int, m: int, n: int,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """vLLM's op: raw GGUF blocks of type `quant_type` as an [m, n] weight."""
    from vllm.model_executor.layers.quantization import layout_ops
    return layout_ops.ggml_dequantize(W, quant_type, m, n, dtype)


def ggml_mul_mat_vec_a8(W: torch.Tensor, X: torch.Tensor, quant_type: int,
                        row: int) -> torch.Tensor:
    """vLLM's op: X @ a raw GGUF weight's transpose, X in int8 per 32."""
    from vllm.model_executor.layers.quantization import layout_ops
    return layout_ops.ggml_mul_mat_vec_a8(W, X, quant_type, row)


def ggml_mul_mat_a8(W: torch.Tensor, X: torch.Tensor, quant_type: int, row: int) -> torch.Tensor:
    """vLLM's op: ggml_mul_mat_vec_a8 for any number of rows."""
    from vllm.model_executor.layers.quantization import layout_ops
    return layout_ops.ggml_mul_mat_a8(W, X, quant_type, row)


def greedy_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Index of each row's largest logit (torch.argmax(-1)'s answer: the first
    maximum, the first NaN if any), read in the logits' own dtype; CPU
    builds only."""
    out = torch.empty(logits.shape[0], dtype=torch.int64, device=logits.device)
    torch.ops._C.greedy_argmax(out, logits)
    return out


def fused_decode_layers(hidden: torch.Tensor, positions: torch.Tensor,
                        weights: list[torch.Tensor], biases: list[torch.Tensor | None],
                        packed: list[torch.Tensor | None], small_m_max_rows: int,
                        key_caches: list[torch.Tensor], value_caches: list[torch.Tensor],
                        cos_sin_cache: torch.Tensor, slot_mapping: torch.Tensor,
                        block_tables: torch.Tensor, seq_lens: torch.Tensor, block_size: int,
                        max_seq_len: int, num_heads: int, num_kv_heads: int, head_size: int,
                        epsilon: float, scale: float, is_neox: bool, activation: str,
                        query_start_loc: torch.Tensor | None = None,
                        output_rows: torch.Tensor | None = None,
                        output_query_start_loc: torch.Tensor | None = None,
                        quant_int8_max_rows: int = QUANT_INT8_MAX_ROWS,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every Llama-family decoder layer of a step in one call (CPU builds):
    per layer `weights` holds input norm, qkv, o, post-attention norm,
    gate_up, down; `biases` and `packed` (weights packed for packed_linear,
    used for any rows, or by oneDNN, used above `small_m_max_rows` rows) qkv,
    o, gate_up, down, each may be None. Without `query_start_loc` a decode
    step (one token per sequence); with it any step. `output_rows` and
    `output_query_start_loc` (AttentionMetadata's): the last layer serves,
    and the call returns, those rows only. Returns (hidden, residual) before
    the final norm. `quant_int8_max_rows`: quant_linear's, for quantized
    weights (packed uint8)."""
    return torch.ops._C.fused_decode_layers(
        hidden, positions, weights, biases, packed, small_m_max_rows, key_caches,
        value_caches, cos_sin_cache,
        slot_mapping, block_tables, seq_lens, block_size, max_seq_len, num_heads,
        num_kv_heads, head_size, epsilon, scale, is_neox, activation, query_start_loc,
        output_rows, output_query_start_loc, quant_int8_max_rows)


def fused_decode_plan(weights: list[torch.Tensor], biases: list[torch.Tensor | None],
                      packed: list[torch.Tensor | None], small_m_max_rows: int,
                      key_caches: list[torch.Tensor], value_caches: list[torch.Tensor],
                      cos_sin_cache: torch.Tensor, num_heads: int, num_kv_heads: int,
                      head_size: int, epsilon: float, scale: float, is_neox: bool,
                      activation: str, embedding: torch.Tensor | None = None,
                      final_norm: torch.Tensor | None = None,
                      final_norm_eps: float = 0.0) -> int:
    """fused_decode_layers' per-model arguments registered once (CPU builds):
    the id names them in fused_decode_planned until fused_decode_plan_release.
    A step then passes its own inputs only (the ~480 tensors of a 30-layer
    model cost ~0.2 ms a call to pass), and the one-row loop keeps its
    buffers between steps. `embedding` and `final_norm`: the model's token
    table and final RMSNorm weight, for steps that fold them in."""
    return torch.ops._C.fused_decode_plan(
        weights, biases, packed, small_m_max_rows, key_caches, value_caches, cos_sin_cache,
        num_heads, num_kv_heads, head_size, epsilon, scale, is_neox, activation, embedding,
        final_norm, final_norm_eps)


def fused_decode_plan_release(plan: int) -> None:
    torch.ops._C.fused_decode_plan_release(plan)


def fused_decode_planned(plan: int, hidden: torch.Tensor, positions: torch.Tensor,
                         slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                         seq_lens: torch.Tensor, block_size: int, max_seq_len: int,
                         query_start_loc: torch.Tensor | None = None,
                         output_rows: torch.Tensor | None = None,
                         output_query_start_loc: torch.Tensor | None = None,
                         quant_int8_max_rows: int = QUANT_INT8_MAX_ROWS, embed: bool = False,
                         final_norm: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """fused_decode_layers on a registered plan (fused_decode_plan); writes
    the plan's caches. `embed`: `hidden` holds int64 token ids, looked up in
    the plan's embedding; `final_norm`: the plan's final norm applied to the
    result (returns the normalised hidden states and their residual sum)."""
    return torch.ops._C.fused_decode_planned(
        plan, hidden, positions, slot_mapping, block_tables, seq_lens, block_size, max_seq_len,
        query_start_loc, output_rows, output_query_start_loc, quant_int8_max_rows, embed,
        final_norm)


# ---------------------------------------------------------------- MoE
def has_kernel(op: str, device: torch.device) -> bool:
    """Whether this build registered `op` ("namespace::name") for the
    device's kind (CPU or CUDA; ROCm builds register as CUDA)."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device.type)
    return (_C is not None and key is not None
            and torch._C._dispatch_has_kernel_for_dispatch_key(op, key))


def packed_moe_available() -> bool:
    """Whether the active CPU kernel variant has packed_moe_experts."""
    return packed_linear_available() and hasattr(torch.ops._C, "packed_moe_experts")


def packed_moe_experts(out: torch.Tensor, input: torch.Tensor, w13_packed: torch.Tensor,
                       w2_packed: torch.Tensor, topk_weights: torch.Tensor,
                       topk_ids: torch.Tensor, activation: str) -> None:
    """bf16 out = a MoE layer's routed experts in one call (CPU builds whose
    active variant has packed_linear): w13_packed [E, ceil(N / 48), 2, K / 2,
    48, 2] (each expert's [W_gate; W_up] as pack_gate_up_pairs packs it),
    w2_packed [E, ceil(K / 48), N / 2, 48, 2] (each W2 as pack_weight_pairs
    packs it), topk_weights fp32 and topk_ids int32 [M, k]."""
    torch.ops._C.packed_moe_experts(out, input, w13_packed, w2_packed, topk_weights, topk_ids,
                                    activation)


# ---------------------------------------------------------------- MoE routing
def topk_softmax(topk_weights: torch.Tensor, topk_ids: torch.Tensor,
                 token_expert_indices: torch.Tensor, gating_output: torch.Tensor) -> None:
    torch.ops._moe_C.topk_softmax(topk_weights, topk_ids, token_expert_indices, gating_output)


def moe_align_block_size(topk_ids: torch.Tensor, num_experts: int, block_size: int,
                         sorted_token_ids: torch.Tensor, experts_ids: torch.Tensor,
                         num_tokens_post_pad: torch.Tensor) -> None:
    torch.ops._moe_C.moe_align_block_size(topk_ids, num_experts, block_size, sorted_token_ids,
                                          experts_ids, num_tokens_post_pad)


def moe_sum(input: torch.Tensor, output: torch.Tensor) -> None:
    torch.ops._moe_C.moe_sum(input, output)


# ---------------------------------------------------------------- CPU utils
def init_cpu_threads_env(cpu_ids: list[int] | str) -> str:
    """Run one OpenMP thread per CPU, each bound to its CPU (CPU builds)."""
    spec = cpu_ids if isinstance(cpu_ids, str) else ",".join(str(c) for c in cpu_ids)
    return torch.ops._C.init_cpu_threads_env(spec)


# ---------------------------------------------------------------- fakes
if _C is not None:

    @torch.library.register_fake("_C::rms_norm")
    def _rms_norm_fake(out, input, weight, epsilon) -> None:
        return None

    @torch.library.register_fake("_C::fused_add_rms_norm")
    def _fused_add_rms_norm_fake(input, residual, weight, epsilon) -> None:
        return None

    def _out_input_fake(out, input) -> None:
        return None

    for _name in ("silu_and_mul", "gelu_and_mul", "gelu_tanh_and_mul", "gelu_new",
                  "gelu_fast", "gelu_quick"):
        torch.library.register_fake(f"_C::{_name}")(_out_input_fake)

    @torch.library.register_fake("_C::reshape_and_cache")
    def _reshape_and_cache_fake(key, value, key_cache, value_cache, slot_mapping,
                                kv_cache_dtype, k_scale, v_scale) -> None:
        return None

    @torch.library.register_fake("_C::copy_blocks")
    def _copy_blocks_fake(key_caches, value_caches, block_mapping) -> None:
        return None

    @torch.library.register_fake("_C::swap_blocks")
    def _swap_blocks_fake(src, dst, block_mapping) -> None:
        return None

    def _no_output_fake(*args) -> None:
        return None

    for _name in ("paged_attention_v1", "paged_attention_v2", "paged_attention_prefill",
                  "concat_and_cache_mla", "mla_decode_kvcache", "mla_prefill_kvcache"):
        torch.library.register_fake(f"_C::{_name}")(_no_output_fake)

    if hasattr(torch.ops._C, "small_m_linear"):
        @torch.library.register_fake("_C::small_m_linear")
        def _small_m_linear_fake(out, input, weight, bias) -> None:
            return None

    if hasattr(torch.ops._C, "packed_linear"):
        @torch.library.register_fake("_C::packed_linear")
        def _packed_linear_fake(out, input, packed, bias) -> None:
            return None

    if hasattr(torch.ops._C, "quant_linear"):
        @torch.library.register_fake("_C::quant_linear")
        def _quant_linear_fake(out, input, packed, bits, group_size, bias,
                               int8_max_rows=QUANT_INT8_MAX_ROWS) -> None:
            return None

    if hasattr(torch.ops._C, "packed_linear_gated"):
        @torch.library.register_fake("_C::packed_linear_gated")
        def _packed_linear_gated_fake(out, input, packed, bias, activation) -> None:
            return None

    if hasattr(torch.ops._C, "greedy_argmax"):
        @torch.library.register_fake("_C::greedy_argmax")
        def _greedy_argmax_fake(out, logits) -> None:
            return None

    if hasattr(torch.ops._C, "fused_decode_layers"):
        @torch.library.register_fake("_C::fused_decode_layers")
        def _fused_decode_layers_fake(hidden, positions, weights, *args, **kwargs):
            # args: the schema's arguments after `weights`; output_rows is the 20th
            output_rows = kwargs.get("output_rows", args[19] if len(args) > 19 else None)
            rows = hidden.shape[0] if output_rows is None else output_rows.shape[0]
            return hidden.new_empty(rows, hidden.shape[1]), hidden.new_empty(rows, hidden.shape[1])

    if hasattr(torch.ops._C, "packed_moe_experts"):
        torch.library.register_fake("_C::packed_moe_experts")(_no_output_fake)

    for _name in ("topk_softmax", "moe_align_block_size", "moe_sum"):
        torch.library.register_fake(f"_moe_C::{_name}")(_no_output_fake)

    @torch.library.register_fake("_C::rotary_embedding")
    def _rotary_embedding_fake(positions, query, key, head_size, cos_sin_cache,
                               is_neox) -> None:
        return None
