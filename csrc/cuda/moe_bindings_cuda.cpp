// CUDA (and, hipified, ROCm) implementations of the MoE routing ops
// (torch.ops._moe_C.*): the shared checks (csrc/moe/moe_checks.h), then the
// torch-free launchers in csrc/moe/moe_routing_kernels.cu.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../core/tensor_checks.h"
#include "../moe/moe_checks.h"
#include "../moe/moe_routing_launch.h"
#include "launch_checks.h"

namespace vllm::cuda_ops {

void topk_softmax(at::Tensor& topk_weights, at::Tensor& topk_ids,
                  at::Tensor& token_expert_indices, const at::Tensor& gating_output) {
  const int64_t k = moe::check_topk_softmax(topk_weights, topk_ids, token_expert_indices,
                                            gating_output);
  const int64_t m = gating_output.size(0);
  if (m == 0) return;
  const at::cuda::OptionalCUDAGuard guard(gating_output.device());
  check_launch(
      gpu::launch_topk_softmax(topk_weights.data_ptr<float>(), topk_ids.data_ptr(),
                               topk_ids.scalar_type() == at::kLong,
                               token_expert_indices.data_ptr<int32_t>(),
                               gating_output.data_ptr(), m, gating_output.size(1), k,
                               gating_output.stride(0),
                               kernel_dtype(gating_output, "topk_softmax"), current_stream()),
      "topk_softmax");
}

void moe_align_block_size(const at::Tensor& topk_ids, int64_t num_experts, int64_t block_size,
                          at::Tensor& sorted_token_ids, at::Tensor& experts_ids,
                          at::Tensor& num_tokens_post_pad) {
  moe::check_moe_align(topk_ids, num_experts, block_size, sorted_token_ids, experts_ids,
                       num_tokens_post_pad);
  const at::cuda::OptionalCUDAGuard guard(topk_ids.device());
  check_launch(gpu::launch_moe_align_block_size(
                       topk_ids.data_ptr(), topk_ids.scalar_type() == at::kLong,
                       topk_ids.numel(), num_experts, block_size,
                       sorted_token_ids.data_ptr<int32_t>(), sorted_token_ids.numel(),
                       experts_ids.data_ptr<int32_t>(), experts_ids.numel(),
                       num_tokens_post_pad.data_ptr<int32_t>(), current_stream()),
                   "moe_align_block_size");
}

void moe_sum(const at::Tensor& input, at::Tensor& output) {
  moe::check_moe_sum(input, output);
  if (input.size(0) == 0 || input.size(2) == 0) return;
  const at::cuda::OptionalCUDAGuard guard(input.device());
  check_launch(gpu::launch_moe_sum(output.data_ptr(), input.data_ptr(), input.size(0),
                                       input.size(1), input.size(2),
                                       kernel_dtype(input, "moe_sum"), current_stream()),
                   "moe_sum");
}

}  // namespace vllm::cuda_ops

TORCH_LIBRARY_IMPL(_moe_C, CUDA, ops) {
  ops.impl("topk_softmax", &vllm::cuda_ops::topk_softmax);
  ops.impl("moe_align_block_size", &vllm::cuda_ops::moe_align_block_size);
  ops.impl("moe_sum", &vllm::cuda_ops::moe_sum);
}
