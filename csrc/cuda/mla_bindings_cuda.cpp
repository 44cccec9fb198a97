// CUDA (and, hipified, ROCm) bindings of the MLA ops. Shapes are checked on
// the host (csrc/core/mla_checks.h, the same checks as on CPU); block tables
// and lengths stay on the device (reading them back would synchronise every
// step), so their values are trusted here.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../attention/mla_launch.h"
#include "../core/mla_checks.h"
#include "launch_checks.h"

namespace vllm::cuda_ops {

void concat_and_cache_mla(const at::Tensor& kv_c, const at::Tensor& k_pe, at::Tensor& kv_cache,
                          const at::Tensor& slot_mapping, const std::string& kv_cache_dtype,
                          const at::Tensor& scale) {
  constexpr const char* op = "concat_and_cache_mla";
  const ConcatMlaShape s =
      check_concat_and_cache_mla(kv_c, k_pe, kv_cache, slot_mapping, kv_cache_dtype);
  TORCH_CHECK(slot_mapping.device() == kv_cache.device(), op,
              ": slot_mapping must be on the cache's device");
  if (s.tokens == 0) return;
  const at::cuda::OptionalCUDAGuard guard(kv_cache.device());
  check_launch(gpu::launch_concat_and_cache_mla(kv_c.data_ptr(), k_pe.data_ptr(),
                                                kv_cache.data_ptr(),
                                                slot_mapping.data_ptr<int64_t>(), s.tokens,
                                                s.lora, s.rope, s.c_stride, s.pe_stride,
                                                kv_cache.element_size(), current_stream()),
               op);
}

void mla_decode_kvcache(at::Tensor& out, const at::Tensor& query, const at::Tensor& kv_cache,
                        double scale, const at::Tensor& block_tables,
                        const at::Tensor& seq_lens) {
  constexpr const char* op = "mla_decode_kvcache";
  const int64_t num_seqs = query.dim() == 3 ? query.size(0) : 0;
  const MlaAttentionArgs a =
      check_mla_attention(op, out, query, kv_cache, scale, block_tables, seq_lens, num_seqs);
  if (num_seqs == 0) return;
  const at::cuda::OptionalCUDAGuard guard(query.device());
  check_launch(gpu::launch_mla_attention(a, current_stream()), op);
}

void mla_prefill_kvcache(at::Tensor& out, const at::Tensor& query, const at::Tensor& kv_cache,
                         double scale, const at::Tensor& block_tables,
                         const at::Tensor& query_start_loc, const at::Tensor& seq_lens) {
  constexpr const char* op = "mla_prefill_kvcache";
  const int64_t num_seqs = seq_lens.dim() == 1 ? seq_lens.size(0) : 0;
  MlaAttentionArgs a =
      check_mla_attention(op, out, query, kv_cache, scale, block_tables, seq_lens, num_seqs);
  check_mla_query_start_loc(op, query_start_loc, query, num_seqs);
  if (num_seqs == 0 || query.size(0) == 0) return;
  a.query_start_loc = query_start_loc.data_ptr<int32_t>();
  const at::cuda::OptionalCUDAGuard guard(query.device());
  check_launch(gpu::launch_mla_attention(a, current_stream()), op);
}

}  // namespace vllm::cuda_ops

TORCH_LIBRARY_IMPL(_C, CUDA, ops) {
  ops.impl("concat_and_cache_mla", &vllm::cuda_ops::concat_and_cache_mla);
  ops.impl("mla_decode_kvcache", &vllm::cuda_ops::mla_decode_kvcache);
  ops.impl("mla_prefill_kvcache", &vllm::cuda_ops::mla_prefill_kvcache);
}
