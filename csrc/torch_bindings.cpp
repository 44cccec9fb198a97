// The one schema registry of the _C extension: each op is declared here once
// (vLLM's names and argument order); devices register implementations under
// the same names in their own binding files.
#include <torch/library.h>

TORCH_LIBRARY(_C, ops) {
  // out = input / sqrt(mean(input^2) + epsilon) * weight, over the last dim.
  ops.def("rms_norm(Tensor! result, Tensor input, Tensor weight, float epsilon) -> ()");
  // residual += input; input = rms_norm(residual) * weight (both in place).
  ops.def(
      "fused_add_rms_norm(Tensor! input, Tensor! residual, Tensor weight, "
      "float epsilon) -> ()");

  // Gated activations: out[..., d] = act(x[..., :d]) * x[..., d:].
  ops.def("silu_and_mul(Tensor! out, Tensor input) -> ()");
  ops.def("gelu_and_mul(Tensor! out, Tensor input) -> ()");
  ops.def("gelu_tanh_and_mul(Tensor! out, Tensor input) -> ()");
  // Element-wise GELU variants: out = act(input).
  ops.def("gelu_new(Tensor! out, Tensor input) -> ()");
  ops.def("gelu_fast(Tensor! out, Tensor input) -> ()");
  ops.def("gelu_quick(Tensor! out, Tensor input) -> ()");

  // Rotary embedding, in place on query and (optional) key.
  ops.def(
      "rotary_embedding(Tensor positions, Tensor! query, Tensor!? key, int head_size, "
      "Tensor cos_sin_cache, bool is_neox) -> ()");

  // KV cache, per layer key_cache/value_cache [num_blocks, num_kv_heads,
  // block_size, head_size]: write tokens to their slots (negative = skip).
  ops.def(
      "reshape_and_cache(Tensor key, Tensor value, Tensor! key_cache, Tensor! value_cache, "
      "Tensor slot_mapping, str kv_cache_dtype, Tensor k_scale, Tensor v_scale) -> ()");
  // Copy blocks src -> dst (pairs in block_mapping [n, 2]) in every layer.
  ops.def(
      "copy_blocks(Tensor(a!)[] key_caches, Tensor(b!)[] value_caches, "
      "Tensor block_mapping) -> ()");
  // Copy blocks of one cache tensor into another (e.g. device <-> host).
  ops.def("swap_blocks(Tensor src, Tensor! dst, Tensor block_mapping) -> ()");

  // Decode attention over the paged cache: query [num_seqs, num_heads,
  // head_size], block_tables [num_seqs, max_blocks] int32, seq_lens int32.
  // The blocksparse arguments exist for vLLM compatibility; only their
  // defaults (0, 0, 0, 0) are accepted.
  ops.def(
      "paged_attention_v1(Tensor! out, Tensor query, Tensor key_cache, Tensor value_cache, "
      "int num_kv_heads, float scale, Tensor block_tables, Tensor seq_lens, int block_size, "
      "int max_seq_len, Tensor? alibi_slopes, str kv_cache_dtype, Tensor k_scale, "
      "Tensor v_scale, int tp_rank, int blocksparse_local_blocks, "
      "int blocksparse_vert_stride, int blocksparse_block_size, "
      "int blocksparse_head_sliding_step) -> ()");
  // v2: the context split into partitions of 512 tokens, then reduced.
  // exp_sums/max_logits [num_seqs, num_heads, max_num_partitions] fp32,
  // tmp_out [num_seqs, num_heads, max_num_partitions, head_size].
  ops.def(
      "paged_attention_v2(Tensor! out, Tensor! exp_sums, Tensor! max_logits, "
      "Tensor! tmp_out, Tensor query, Tensor key_cache, Tensor value_cache, "
      "int num_kv_heads, float scale, Tensor block_tables, Tensor seq_lens, int block_size, "
      "int max_seq_len, Tensor? alibi_slopes, str kv_cache_dtype, Tensor k_scale, "
      "Tensor v_scale, int tp_rank, int blocksparse_local_blocks, "
      "int blocksparse_vert_stride, int blocksparse_block_size, "
      "int blocksparse_head_sliding_step) -> ()");
  // Prefill / chunked prefill: query [num_tokens, num_heads, head_size]; the
  // tokens query_start_loc[i]..query_start_loc[i+1] are the last positions
  // of sequence i (seq_lens[i] long, their K/V already in the cache).
  ops.def(
      "paged_attention_prefill(Tensor! out, Tensor query, Tensor key_cache, "
      "Tensor value_cache, int num_kv_heads, float scale, Tensor block_tables, "
      "Tensor query_start_loc, Tensor seq_lens, Tensor? alibi_slopes, str kv_cache_dtype, "
      "Tensor k_scale, Tensor v_scale) -> ()");

  // MLA (DeepSeek's multi-head latent attention). The latent cache, per
  // layer [num_blocks, block_size, kv_lora_rank + rope_dim]: each token's
  // normalised latent kv_c [tokens, kv_lora_rank] then its rotated shared
  // key part k_pe [tokens, rope_dim] go to its slot (negative = skip).
  ops.def(
      "concat_and_cache_mla(Tensor kv_c, Tensor k_pe, Tensor! kv_cache, Tensor slot_mapping, "
      "str kv_cache_dtype, Tensor scale) -> ()");
  // Absorbed MLA decode: query [num_seqs, num_heads, latent_dim] (W_UK
  // folded in), one query per sequence at its last position; out [num_seqs,
  // num_heads, v_dim] = softmax(scale q C^T) C[:, :v_dim] (W_UV not applied).
  ops.def(
      "mla_decode_kvcache(Tensor! out, Tensor query, Tensor kv_cache, float scale, "
      "Tensor block_tables, Tensor seq_lens) -> ()");
  // The same for prefill / chunked prefill: tokens query_start_loc[i] ..
  // query_start_loc[i+1] are the last positions of sequence i (causal among
  // themselves, full over the cached prefix).
  ops.def(
      "mla_prefill_kvcache(Tensor! out, Tensor query, Tensor kv_cache, float scale, "
      "Tensor block_tables, Tensor query_start_loc, Tensor seq_lens) -> ()");
}
