// The CPU implementations of the _C ops (checks + kernel), callable from C++
// without the dispatcher: the fused decode path chains them directly.
#pragma once

#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "kernel_table.h"

namespace vllm::cpu_ops {

void rms_norm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
              double epsilon);
void fused_add_rms_norm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight,
                        double epsilon);
void silu_and_mul(at::Tensor& out, const at::Tensor& input);
void gelu_and_mul(at::Tensor& out, const at::Tensor& input);
void gelu_tanh_and_mul(at::Tensor& out, const at::Tensor& input);
void rotary_embedding(const at::Tensor& positions, at::Tensor& query,
                      const std::optional<at::Tensor>& key, int64_t head_size,
                      const at::Tensor& cos_sin_cache, bool is_neox);
void reshape_and_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                       at::Tensor& value_cache, const at::Tensor& slot_mapping,
                       const std::string& kv_cache_dtype, const at::Tensor& k_scale,
                       const at::Tensor& v_scale);
void paged_attention_v1(at::Tensor& out, const at::Tensor& query, const at::Tensor& key_cache,
                        const at::Tensor& value_cache, int64_t num_kv_heads, double scale,
                        const at::Tensor& block_tables, const at::Tensor& seq_lens,
                        int64_t block_size, int64_t max_seq_len,
                        const std::optional<at::Tensor>& alibi_slopes,
                        const std::string& kv_cache_dtype, const at::Tensor& k_scale,
                        const at::Tensor& v_scale, int64_t tp_rank, int64_t local_blocks,
                        int64_t vert_stride, int64_t sparse_block_size, int64_t sliding_step);
void paged_attention_prefill(at::Tensor& out, const at::Tensor& query,
                             const at::Tensor& key_cache, const at::Tensor& value_cache,
                             int64_t num_kv_heads, double scale, const at::Tensor& block_tables,
                             const at::Tensor& query_start_loc, const at::Tensor& seq_lens,
                             const std::optional<at::Tensor>& alibi_slopes,
                             const std::string& kv_cache_dtype, const at::Tensor& k_scale,
                             const at::Tensor& v_scale);
void small_m_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias);
void packed_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& packed,
                   const std::optional<at::Tensor>& bias);
void quant_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& packed,
                  int64_t bits, int64_t group_size, const std::optional<at::Tensor>& bias,
                  int64_t int8_max_rows);
void packed_linear_gated(at::Tensor& out, const at::Tensor& input, const at::Tensor& packed,
                         const std::optional<at::Tensor>& bias, const std::string& activation);

// packed_linear's and packed_linear_gated's checks, returning the kernel's
// arguments (for callers that run the kernel's per-thread parts themselves).
cpu::LinearArgs checked_packed_linear_args(at::Tensor& out, const at::Tensor& input,
                                           const at::Tensor& packed,
                                           const std::optional<at::Tensor>& bias);
cpu::LinearArgs checked_packed_linear_gated_args(at::Tensor& out, const at::Tensor& input,
                                                 const at::Tensor& packed,
                                                 const std::optional<at::Tensor>& bias);
cpu::Activation gated_activation_kind(const std::string& activation);

}  // namespace vllm::cpu_ops
