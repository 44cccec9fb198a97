// Argument checks of the MoE routing ops, shared by every device's bindings
// so bad input gets the same message on CPU, CUDA and ROCm.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace vllm::moe {

// topk_softmax: returns k; checks the three outputs against gating_output.
inline int64_t check_topk_softmax(const at::Tensor& topk_weights, const at::Tensor& topk_ids,
                                  const at::Tensor& token_expert_indices,
                                  const at::Tensor& gating_output) {
  constexpr const char* op = "topk_softmax";
  TORCH_CHECK(gating_output.dim() == 2, op, ": gating_output must be [tokens, experts], got ",
              gating_output.sizes());
  const auto g = gating_output.scalar_type();
  TORCH_CHECK(g == at::kFloat || g == at::kBFloat16 || g == at::kHalf, op,
              ": gating_output must be float32, bfloat16 or float16, got ", g);
  const int64_t m = gating_output.size(0), e = gating_output.size(1);
  TORCH_CHECK(topk_weights.dim() == 2 && topk_weights.size(0) == m, op,
              ": topk_weights must be [", m, ", k], got ", topk_weights.sizes());
  const int64_t k = topk_weights.size(1);
  TORCH_CHECK(k >= 1 && k <= e, op, ": k (", k, ") must lie in [1, ", e,
              "], the number of experts");
  TORCH_CHECK(topk_ids.sizes() == topk_weights.sizes() &&
                  token_expert_indices.sizes() == topk_weights.sizes(),
              op, ": topk_ids ", topk_ids.sizes(), " and token_expert_indices ",
              token_expert_indices.sizes(), " must match topk_weights ", topk_weights.sizes());
  TORCH_CHECK(topk_weights.scalar_type() == at::kFloat, op, ": topk_weights must be float32");
  TORCH_CHECK(topk_ids.scalar_type() == at::kInt || topk_ids.scalar_type() == at::kLong, op,
              ": topk_ids must be int32 or int64, got ", topk_ids.scalar_type());
  TORCH_CHECK(token_expert_indices.scalar_type() == at::kInt, op,
              ": token_expert_indices must be int32");
  for (const at::Tensor* t : {&topk_weights, &topk_ids, &token_expert_indices}) {
    TORCH_CHECK(t->is_contiguous() && t->device() == gating_output.device(), op,
                ": outputs must be contiguous and on ", gating_output.device());
  }
  TORCH_CHECK(gating_output.stride(1) == 1, op, ": gating_output rows must be contiguous");
  return k;
}

// moe_align_block_size: the checks that need no data.
inline void check_moe_align(const at::Tensor& topk_ids, int64_t num_experts, int64_t block_size,
                            const at::Tensor& sorted_token_ids, const at::Tensor& experts_ids,
                            const at::Tensor& num_tokens_post_pad) {
  constexpr const char* op = "moe_align_block_size";
  TORCH_CHECK(topk_ids.scalar_type() == at::kInt || topk_ids.scalar_type() == at::kLong, op,
              ": topk_ids must be int32 or int64, got ", topk_ids.scalar_type());
  TORCH_CHECK(topk_ids.is_contiguous(), op, ": topk_ids must be contiguous");
  TORCH_CHECK(num_experts >= 1 && block_size >= 1, op, ": num_experts (", num_experts,
              ") and block_size (", block_size, ") must be positive");
  for (const at::Tensor* t : {&sorted_token_ids, &experts_ids, &num_tokens_post_pad}) {
    TORCH_CHECK(t->scalar_type() == at::kInt && t->dim() == 1 && t->is_contiguous(), op,
                ": sorted_token_ids, experts_ids and num_tokens_post_pad must be 1-D contiguous "
                "int32 tensors");
    TORCH_CHECK(t->device() == topk_ids.device(), op, ": outputs must be on ",
                topk_ids.device());
  }
  TORCH_CHECK(num_tokens_post_pad.numel() >= 1, op, ": num_tokens_post_pad needs one element");
  // The worst case: every expert's run one short of a full block.
  const int64_t worst = topk_ids.numel() + num_experts * (block_size - 1);
  TORCH_CHECK(sorted_token_ids.numel() >= worst, op, ": sorted_token_ids holds ",
              sorted_token_ids.numel(), " entries; ", topk_ids.numel(), " choices over ",
              num_experts, " experts in blocks of ", block_size, " may need ", worst);
  const int64_t blocks = (worst + block_size - 1) / block_size;
  TORCH_CHECK(experts_ids.numel() >= blocks, op, ": experts_ids holds ", experts_ids.numel(),
              " entries; up to ", blocks, " blocks may be needed");
}

inline void check_moe_sum(const at::Tensor& input, const at::Tensor& output) {
  constexpr const char* op = "moe_sum";
  TORCH_CHECK(input.dim() == 3 && output.dim() == 2 && input.size(0) == output.size(0) &&
                  input.size(2) == output.size(1),
              op, ": input must be [M, k, H] and output [M, H], got ", input.sizes(), " and ",
              output.sizes());
  TORCH_CHECK(input.scalar_type() == output.scalar_type(), op, ": output dtype ",
              output.scalar_type(), " differs from input dtype ", input.scalar_type());
  const auto d = input.scalar_type();
  TORCH_CHECK(d == at::kFloat || d == at::kBFloat16 || d == at::kHalf, op,
              ": float32, bfloat16 or float16 only, got ", d);
  TORCH_CHECK(input.is_contiguous() && output.is_contiguous(), op,
              ": input and output must be contiguous");
  TORCH_CHECK(input.device() == output.device(), op, ": output is on ", output.device(),
              ", input on ", input.device());
}

}  // namespace vllm::moe
