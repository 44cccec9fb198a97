// CPU bindings of the paged attention ops (v1, v2, prefill): checks, then the
// active ISA variant's kernel.
#include <torch/library.h>

#include "../core/attention_checks.h"
#include "cpu_ops.h"  // the declarations the fused layer loop calls: checked here
#include "kernel_table.h"

namespace vllm::cpu_ops {
namespace {

// The kernel indexes the cache with these: check them on the host, where they
// live on CPU anyway, so a bad table is an error and not a wild read.
void check_tables(const char* op, const AttentionShape& s, const at::Tensor& block_tables,
                  const at::Tensor& seq_lens) {
  TORCH_CHECK(s.head_size <= cpu::kAttentionMaxHeadSize, op, ": head_size ", s.head_size,
              " is above the CPU kernel's ", cpu::kAttentionMaxHeadSize);
  TORCH_CHECK(s.num_heads / s.num_kv_heads <= cpu::kAttentionMaxGroup, op,
              ": more than ", cpu::kAttentionMaxGroup, " query heads per KV head");
  TORCH_CHECK(s.block_size <= cpu::kAttentionMaxBlockSize, op, ": block_size ", s.block_size,
              " is above the CPU kernel's ", cpu::kAttentionMaxBlockSize);
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  const int32_t* table = block_tables.data_ptr<int32_t>();
  for (int64_t i = 0; i < s.num_seqs; ++i) {
    TORCH_CHECK(lens[i] >= 0 && lens[i] <= s.max_blocks_per_seq * s.block_size, op,
                ": seq_lens[", i, "]=", lens[i], " needs more blocks than block_tables holds");
    const int64_t used = (int64_t(lens[i]) + s.block_size - 1) / s.block_size;
    for (int64_t b = 0; b < used; ++b) {
      const int32_t block = table[i * s.max_blocks_per_seq + b];
      TORCH_CHECK(block >= 0 && block < s.num_blocks, op, ": block_tables[", i, "][", b,
                  "]=", block, " is outside the cache's ", s.num_blocks, " blocks");
    }
  }
}

// Decode (v1/v2): the shared shape checks plus the table values.
AttentionShape check_decode(const char* op, const at::Tensor& out, const at::Tensor& query,
                            const at::Tensor& key_cache, const at::Tensor& value_cache,
                            int64_t num_kv_heads, const at::Tensor& block_tables,
                            const at::Tensor& seq_lens, int64_t block_size,
                            const std::optional<at::Tensor>& alibi_slopes,
                            const std::string& kv_cache_dtype) {
  const AttentionShape s = check_decode_shape(op, out, query, key_cache, value_cache,
                                              num_kv_heads, block_tables, seq_lens, block_size,
                                              alibi_slopes, kv_cache_dtype);
  check_tables(op, s, block_tables, seq_lens);
  return s;
}

}  // namespace

void paged_attention_v1(at::Tensor& out, const at::Tensor& query, const at::Tensor& key_cache,
                        const at::Tensor& value_cache, int64_t num_kv_heads, double scale,
                        const at::Tensor& block_tables, const at::Tensor& seq_lens,
                        int64_t block_size, int64_t max_seq_len,
                        const std::optional<at::Tensor>& alibi_slopes,
                        const std::string& kv_cache_dtype, const at::Tensor& k_scale,
                        const at::Tensor& v_scale, int64_t tp_rank, int64_t local_blocks,
                        int64_t vert_stride, int64_t sparse_block_size, int64_t sliding_step) {
  constexpr const char* op = "paged_attention_v1";
  check_blocksparse_defaults(op, local_blocks, vert_stride, sparse_block_size, sliding_step);
  const AttentionShape s = check_decode(op, out, query, key_cache, value_cache, num_kv_heads,
                                        block_tables, seq_lens, block_size, alibi_slopes,
                                        kv_cache_dtype);
  if (s.num_seqs == 0) return;
  cpu::active_kernels().paged_attention(attention_args(s, out, query, key_cache, value_cache,
                                                       scale, block_tables, seq_lens,
                                                       alibi_slopes, op));
}

void paged_attention_v2(at::Tensor& out, at::Tensor& exp_sums, at::Tensor& max_logits,
                        at::Tensor& tmp_out, const at::Tensor& query, const at::Tensor& key_cache,
                        const at::Tensor& value_cache, int64_t num_kv_heads, double scale,
                        const at::Tensor& block_tables, const at::Tensor& seq_lens,
                        int64_t block_size, int64_t max_seq_len,
                        const std::optional<at::Tensor>& alibi_slopes,
                        const std::string& kv_cache_dtype, const at::Tensor& k_scale,
                        const at::Tensor& v_scale, int64_t tp_rank, int64_t local_blocks,
                        int64_t vert_stride, int64_t sparse_block_size, int64_t sliding_step) {
  constexpr const char* op = "paged_attention_v2";
  check_blocksparse_defaults(op, local_blocks, vert_stride, sparse_block_size, sliding_step);
  const AttentionShape s = check_decode(op, out, query, key_cache, value_cache, num_kv_heads,
                                        block_tables, seq_lens, block_size, alibi_slopes,
                                        kv_cache_dtype);
  // The lengths are on the host: size the check by the real longest one.
  const int64_t longest = s.num_seqs ? seq_lens.max().item<int32_t>() : 0;
  const int64_t parts =
      check_v2_buffers(op, s, exp_sums, max_logits, tmp_out, query, longest);
  if (s.num_seqs == 0) return;
  PagedAttentionArgs args = attention_args(s, out, query, key_cache, value_cache, scale,
                                           block_tables, seq_lens, alibi_slopes, op);
  add_v2_buffers(args, parts, exp_sums, max_logits, tmp_out);
  cpu::active_kernels().paged_attention(args);
}

void paged_attention_prefill(at::Tensor& out, const at::Tensor& query,
                             const at::Tensor& key_cache, const at::Tensor& value_cache,
                             int64_t num_kv_heads, double scale, const at::Tensor& block_tables,
                             const at::Tensor& query_start_loc, const at::Tensor& seq_lens,
                             const std::optional<at::Tensor>& alibi_slopes,
                             const std::string& kv_cache_dtype, const at::Tensor& k_scale,
                             const at::Tensor& v_scale) {
  constexpr const char* op = "paged_attention_prefill";
  const AttentionShape s = check_paged_attention(op, out, query, key_cache, value_cache,
                                                 num_kv_heads, block_tables, seq_lens,
                                                 alibi_slopes, kv_cache_dtype);
  check_tables(op, s, block_tables, seq_lens);
  check_query_start_loc(op, s, query_start_loc);
  const int32_t* starts = query_start_loc.data_ptr<int32_t>();
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  TORCH_CHECK(starts[0] == 0 && starts[s.num_seqs] == query.size(0), op,
              ": query_start_loc must run from 0 to the number of query tokens (",
              query.size(0), ")");
  for (int64_t i = 0; i < s.num_seqs; ++i) {
    const int64_t q_len = starts[i + 1] - starts[i];
    TORCH_CHECK(q_len >= 0 && q_len <= lens[i], op, ": sequence ", i, " has ", q_len,
                " query tokens but only ", lens[i], " positions");
  }
  if (s.num_seqs == 0 || query.size(0) == 0) return;
  PagedAttentionArgs args = attention_args(s, out, query, key_cache, value_cache, scale,
                                           block_tables, seq_lens, alibi_slopes, op);
  args.query_start_loc = starts;
  cpu::active_kernels().paged_attention(args);
}

}  // namespace vllm::cpu_ops

TORCH_LIBRARY_IMPL(_C, CPU, ops) {
  ops.impl("paged_attention_v1", &vllm::cpu_ops::paged_attention_v1);
  ops.impl("paged_attention_v2", &vllm::cpu_ops::paged_attention_v2);
  ops.impl("paged_attention_prefill", &vllm::cpu_ops::paged_attention_prefill);
}
