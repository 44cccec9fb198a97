// Argument checks of the paged attention ops, shared by the device bindings.
#pragma once

#include <optional>
#include <string>

#include "cache_checks.h"

namespace vllm {

constexpr int64_t kPagedAttentionPartitionSize = 512;

struct AttentionShape {
  int64_t num_seqs, num_heads, num_kv_heads, head_size, block_size, num_blocks;
  int64_t query_stride, out_stride, max_blocks_per_seq;
};

inline AttentionShape check_paged_attention(
    const char* op, const at::Tensor& out, const at::Tensor& query, const at::Tensor& key_cache,
    const at::Tensor& value_cache, int64_t num_kv_heads, const at::Tensor& block_tables,
    const at::Tensor& seq_lens, const std::optional<at::Tensor>& alibi_slopes,
    const std::string& kv_cache_dtype) {
  check_kv_cache_dtype(kv_cache_dtype, op);
  TORCH_CHECK(query.dim() == 3, op, ": query must be [tokens, num_heads, head_size], got ",
              query.sizes());
  TORCH_CHECK(out.sizes() == query.sizes(), op, ": out shape ", out.sizes(),
              " differs from query shape ", query.sizes());
  check_same_dtype_device(out, query, op, "out");
  kernel_dtype(query, op);
  AttentionShape s{};
  s.num_heads = query.size(1);
  s.head_size = query.size(2);
  const CacheShape cache = check_cache_pair(key_cache, value_cache, op);
  check_same_dtype_device(key_cache, query, op, "key_cache");
  s.num_blocks = cache.num_blocks;
  s.num_kv_heads = cache.num_kv_heads;
  s.block_size = cache.block_size;
  TORCH_CHECK(num_kv_heads == s.num_kv_heads, op, ": num_kv_heads=", num_kv_heads,
              " but key_cache has ", s.num_kv_heads);
  TORCH_CHECK(cache.head_size == s.head_size, op, ": cache head_size ", cache.head_size,
              " differs from query's ", s.head_size);
  TORCH_CHECK(s.num_heads % s.num_kv_heads == 0, op, ": num_heads ", s.num_heads,
              " is not a multiple of num_kv_heads ", s.num_kv_heads);
  for (int64_t d : {int64_t(1), int64_t(2)}) {
    TORCH_CHECK(query.stride(d) == (d == 1 ? s.head_size : 1) &&
                    out.stride(d) == (d == 1 ? s.head_size : 1),
                op, ": query and out must be contiguous within a token");
  }
  s.query_stride = query.stride(0);
  s.out_stride = out.stride(0);
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && block_tables.dim() == 2 &&
                  block_tables.is_contiguous(),
              op, ": block_tables must be a contiguous int32 [num_seqs, max_blocks] tensor");
  TORCH_CHECK(seq_lens.scalar_type() == at::kInt && seq_lens.dim() == 1 &&
                  seq_lens.is_contiguous(),
              op, ": seq_lens must be a contiguous 1-D int32 tensor");
  s.num_seqs = seq_lens.size(0);
  TORCH_CHECK(block_tables.size(0) == s.num_seqs, op, ": block_tables has ",
              block_tables.size(0), " rows for ", s.num_seqs, " sequences");
  s.max_blocks_per_seq = block_tables.size(1);
  if (alibi_slopes.has_value()) {
    TORCH_CHECK(alibi_slopes->scalar_type() == at::kFloat && alibi_slopes->numel() == s.num_heads &&
                    alibi_slopes->is_contiguous(),
                op, ": alibi_slopes must be a contiguous fp32 tensor of num_heads values");
  }
  return s;
}

inline void check_blocksparse_defaults(const char* op, int64_t local_blocks, int64_t vert_stride,
                                       int64_t block_size, int64_t head_sliding_step) {
  TORCH_CHECK(local_blocks == 0 && vert_stride == 0 && block_size == 0 &&
                  head_sliding_step == 0,
              op, ": block-sparse attention is not supported; pass 0 for the blocksparse_* "
              "arguments");
}

}  // namespace vllm
