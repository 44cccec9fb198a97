// Host launchers of the paged attention kernels (plain C++ types, torch-free).
// Cache layout: key [num_blocks, num_kv_heads, head_size, block_size], value
// [num_blocks, num_kv_heads, block_size, head_size].
#pragma once

#include <cstdint>

#include "../core/dtype.h"

namespace vllm::gpu {

struct PagedAttentionParams {
  void* out;
  const void* query;
  const void* key_cache;
  const void* value_cache;
  const int32_t* block_tables;
  int64_t block_table_stride;
  const int32_t* seq_lens;
  const int32_t* query_start_loc;  // null: decode, one query token per sequence
  const float* alibi_slopes;       // null: none
  int64_t num_seqs, num_query_tokens, num_heads, num_kv_heads, head_size, block_size;
  int64_t query_token_stride, out_token_stride;
  float scale;
  // v2 (decode only): per-partition results, then a reduce into out.
  int64_t partition_size, max_num_partitions;
  float* exp_sums;
  float* max_logits;
  void* tmp_out;
  DType dtype;
};

// Returns 0 or the runtime's error code.
int launch_paged_attention(const PagedAttentionParams& p, void* stream);

}  // namespace vllm::gpu
