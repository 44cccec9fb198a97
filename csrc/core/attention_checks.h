// Argument checks of the paged attention ops, shared by the device bindings.
#pragma once

#include <optional>
#include <string>

#include "attention_args.h"
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

// Decode (v1/v2): one query token per sequence, block_size as the cache's.
inline AttentionShape check_decode_shape(const char* op, const at::Tensor& out,
                                         const at::Tensor& query, const at::Tensor& key_cache,
                                         const at::Tensor& value_cache, int64_t num_kv_heads,
                                         const at::Tensor& block_tables,
                                         const at::Tensor& seq_lens, int64_t block_size,
                                         const std::optional<at::Tensor>& alibi_slopes,
                                         const std::string& kv_cache_dtype) {
  const AttentionShape s = check_paged_attention(op, out, query, key_cache, value_cache,
                                                 num_kv_heads, block_tables, seq_lens,
                                                 alibi_slopes, kv_cache_dtype);
  TORCH_CHECK(query.size(0) == s.num_seqs, op, ": decode takes one query token per sequence");
  TORCH_CHECK(block_size == s.block_size, op, ": block_size=", block_size, " but the cache's is ",
              s.block_size);
  return s;
}

// v2's partial-result buffers; returns the number of partitions they hold.
inline int64_t check_v2_buffers(const char* op, const AttentionShape& s,
                                const at::Tensor& exp_sums, const at::Tensor& max_logits,
                                const at::Tensor& tmp_out, const at::Tensor& query,
                                int64_t max_seq_len) {
  const int64_t parts = exp_sums.dim() == 3 ? exp_sums.size(2) : 0;
  TORCH_CHECK(exp_sums.scalar_type() == at::kFloat && exp_sums.is_contiguous() &&
                  exp_sums.dim() == 3 && exp_sums.size(0) == s.num_seqs &&
                  exp_sums.size(1) == s.num_heads && max_logits.sizes() == exp_sums.sizes() &&
                  max_logits.is_contiguous() && max_logits.scalar_type() == at::kFloat,
              op, ": exp_sums/max_logits must be contiguous fp32 [num_seqs, num_heads, "
              "partitions] tensors");
  TORCH_CHECK(tmp_out.dim() == 4 && tmp_out.size(0) == s.num_seqs &&
                  tmp_out.size(1) == s.num_heads && tmp_out.size(2) == parts &&
                  tmp_out.size(3) == s.head_size && tmp_out.is_contiguous() &&
                  tmp_out.scalar_type() == query.scalar_type(),
              op, ": tmp_out must be a contiguous [num_seqs, num_heads, partitions, head_size] "
              "tensor of the query dtype");
  TORCH_CHECK(parts * kPagedAttentionPartitionSize >= max_seq_len, op, ": ", parts,
              " partitions of ", kPagedAttentionPartitionSize, " tokens cannot hold ",
              max_seq_len);
  return parts;
}

inline void check_query_start_loc(const char* op, const AttentionShape& s,
                                  const at::Tensor& query_start_loc) {
  TORCH_CHECK(query_start_loc.scalar_type() == at::kInt && query_start_loc.dim() == 1 &&
                  query_start_loc.is_contiguous() && query_start_loc.size(0) == s.num_seqs + 1,
              op, ": query_start_loc must be a contiguous int32 [num_seqs + 1] tensor");
}

// Kernel arguments from checked tensors (decode v1 / prefill; v2 and prefill
// callers fill in their extra fields).
inline PagedAttentionArgs attention_args(const AttentionShape& s, at::Tensor& out,
                                         const at::Tensor& query, const at::Tensor& key_cache,
                                         const at::Tensor& value_cache, double scale,
                                         const at::Tensor& block_tables,
                                         const at::Tensor& seq_lens,
                                         const std::optional<at::Tensor>& alibi_slopes,
                                         const char* op) {
  return PagedAttentionArgs{
      out.data_ptr(), query.data_ptr(), key_cache.data_ptr(), value_cache.data_ptr(),
      block_tables.data_ptr<int32_t>(), s.max_blocks_per_seq, seq_lens.data_ptr<int32_t>(),
      nullptr, alibi_slopes ? alibi_slopes->data_ptr<float>() : nullptr, s.num_seqs,
      query.size(0), s.num_heads, s.num_kv_heads, s.head_size, s.block_size, s.query_stride,
      s.out_stride, static_cast<float>(scale), 0, 0, nullptr, nullptr, nullptr,
      kernel_dtype(query, op)};
}

// v2: point the arguments at the partial-result buffers.
inline void add_v2_buffers(PagedAttentionArgs& args, int64_t partitions, at::Tensor& exp_sums,
                           at::Tensor& max_logits, at::Tensor& tmp_out) {
  args.partition_size = kPagedAttentionPartitionSize;
  args.max_num_partitions = partitions;
  args.exp_sums = exp_sums.data_ptr<float>();
  args.max_logits = max_logits.data_ptr<float>();
  args.tmp_out = tmp_out.data_ptr();
}

inline void check_blocksparse_defaults(const char* op, int64_t local_blocks, int64_t vert_stride,
                                       int64_t block_size, int64_t head_sliding_step) {
  TORCH_CHECK(local_blocks == 0 && vert_stride == 0 && block_size == 0 &&
                  head_sliding_step == 0,
              op, ": block-sparse attention is not supported; pass 0 for the blocksparse_* "
              "arguments");
}

}  // namespace vllm
