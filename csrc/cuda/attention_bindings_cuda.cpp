// CUDA (and, hipified, ROCm) bindings of the paged attention ops. Shapes are
// checked on the host; block tables and lengths stay on the device (reading
// them back would synchronise every step), so their values are trusted here.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../attention/attention_launch.h"
#include "../core/attention_checks.h"

namespace vllm::cuda_ops {
namespace {

PagedAttentionArgs gpu_args(const AttentionShape& s, at::Tensor& out, const at::Tensor& query,
                            const at::Tensor& key_cache, const at::Tensor& value_cache,
                            double scale, const at::Tensor& block_tables,
                            const at::Tensor& seq_lens,
                            const std::optional<at::Tensor>& alibi_slopes, const char* op) {
  TORCH_CHECK(s.head_size <= 256, op, ": head_size above 256 is not supported on GPU");
  return attention_args(s, out, query, key_cache, value_cache, scale, block_tables, seq_lens,
                        alibi_slopes, op);
}

void launch(const PagedAttentionArgs& params, const at::Tensor& query, const char* op) {
  const at::cuda::OptionalCUDAGuard guard(query.device());
  const int code =
      gpu::launch_paged_attention(params, at::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(code == 0, op, ": kernel launch failed (", code, ")");
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
  const AttentionShape s = check_decode_shape(op, out, query, key_cache, value_cache, num_kv_heads,
                                              block_tables, seq_lens, block_size,
                                              alibi_slopes, kv_cache_dtype);
  if (s.num_seqs == 0) return;
  launch(gpu_args(s, out, query, key_cache, value_cache, scale, block_tables, seq_lens,
                  alibi_slopes, op),
         query, op);
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
  const AttentionShape s = check_decode_shape(op, out, query, key_cache, value_cache, num_kv_heads,
                                              block_tables, seq_lens, block_size,
                                              alibi_slopes, kv_cache_dtype);
  const int64_t parts =
      check_v2_buffers(op, s, exp_sums, max_logits, tmp_out, query, max_seq_len);
  if (s.num_seqs == 0) return;
  PagedAttentionArgs params = gpu_args(s, out, query, key_cache, value_cache, scale,
                                       block_tables, seq_lens, alibi_slopes, op);
  add_v2_buffers(params, parts, exp_sums, max_logits, tmp_out);
  launch(params, query, op);
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
  check_query_start_loc(op, s, query_start_loc);
  if (s.num_seqs == 0 || query.size(0) == 0) return;
  PagedAttentionArgs params = gpu_args(s, out, query, key_cache, value_cache, scale,
                                       block_tables, seq_lens, alibi_slopes, op);
  params.query_start_loc = query_start_loc.data_ptr<int32_t>();
  launch(params, query, op);
}

}  // namespace vllm::cuda_ops

TORCH_LIBRARY_IMPL(_C, CUDA, ops) {
  ops.impl("paged_attention_v1", &vllm::cuda_ops::paged_attention_v1);
  ops.impl("paged_attention_v2", &vllm::cuda_ops::paged_attention_v2);
  ops.impl("paged_attention_prefill", &vllm::cuda_ops::paged_attention_prefill);
}
