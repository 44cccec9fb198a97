// Arguments of the paged attention kernels, shared by the CPU kernel table and
// the GPU launcher (plain C++ types, torch-free).
//
// Cache layout: key [num_blocks, num_kv_heads, head_size, block_size], value
// [num_blocks, num_kv_heads, block_size, head_size]. Decode (query_start_loc
// == null): one query token per sequence. Prefill: tokens query_start_loc[s]
// .. query_start_loc[s+1] are the last positions of sequence s (causal among
// themselves, full over the cached prefix). partition_size > 0 (decode only):
// per-partition results in exp_sums / max_logits / tmp_out, reduced into out.
#pragma once

#include <cstdint>

#include "dtype.h"

namespace vllm {

struct PagedAttentionArgs {
  void* out;
  const void* query;
  const void* key_cache;
  const void* value_cache;
  const int32_t* block_tables;
  int64_t block_table_stride;
  const int32_t* seq_lens;
  const int32_t* query_start_loc;
  const float* alibi_slopes;
  int64_t num_seqs;
  int64_t num_query_tokens;
  int64_t num_heads;
  int64_t num_kv_heads;
  int64_t head_size;
  int64_t block_size;
  int64_t query_token_stride;
  int64_t out_token_stride;
  float scale;
  int64_t partition_size;
  int64_t max_num_partitions;
  float* exp_sums;
  float* max_logits;
  void* tmp_out;
  DType dtype;
};

}  // namespace vllm
