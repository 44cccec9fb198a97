// Arguments of the MLA (multi-head latent attention) kernels, shared by the
// CPU kernel table and the GPU launcher (plain C++ types, torch-free).
//
// Paged latent cache [num_blocks, block_size, latent_dim], contiguous:
// each cached position holds kv_lora_rank latent values then the rotated
// key part. Absorbed form: every query head is a latent_dim vector (W_UK
// already folded in), the keys are the cached latents, the values their
// first v_dim (= kv_lora_rank) elements (W_UV is applied by the caller):
// out[t, h] = sum_p softmax_p(scale * q[t, h] . c_p) c_p[:v_dim], over the
// positions p a query token sees. Decode (query_start_loc null): token i is
// sequence i's last position. Prefill: tokens query_start_loc[s] ..
// query_start_loc[s+1] are the last positions of sequence s, causal among
// themselves. Heads of a token are contiguous.
#pragma once

#include <cstdint>

#include "dtype.h"

namespace vllm {

struct MlaAttentionArgs {
  void* out;           // [tokens][num_heads][v_dim], tokens out_token_stride apart
  const void* query;   // [tokens][num_heads][latent_dim], query_token_stride apart
  const void* kv_cache;
  const int32_t* block_tables;
  int64_t block_table_stride;
  const int32_t* seq_lens;
  const int32_t* query_start_loc;
  int64_t num_seqs, num_query_tokens, num_heads, latent_dim, v_dim, block_size;
  int64_t query_token_stride, out_token_stride;
  float scale;
  DType dtype;
};

// Limits of the MLA kernels (every device): latent_dim and v_dim multiples
// of 16 (whole vectors on every ISA), latent_dim at most 1024 (scratch).
constexpr int64_t kMlaDimMultiple = 16;
constexpr int64_t kMlaMaxLatentDim = 1024;

}  // namespace vllm
