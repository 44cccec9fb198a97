// CUDA (and, hipified, ROCm) implementations of the _C ops: shared argument
// checks, then the torch-free launchers in the .cu files.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../activation/activation_launch.h"
#include "../cache/cache_launch.h"
#include "../core/cache_checks.h"
#include "../core/rotary_checks.h"
#include "../core/tensor_checks.h"
#include "../layernorm/layernorm_launch.h"
#include "../pos_encoding/rotary_launch.h"
#include "launch_checks.h"

namespace vllm::cuda_ops {

void rms_norm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
              double epsilon) {
  constexpr const char* op = "rms_norm";
  check_norm_weight(weight, input, op);
  check_same(out, input, op, "out");
  const int64_t rows = num_rows(input);
  if (rows == 0) return;
  const at::cuda::OptionalCUDAGuard guard(input.device());
  check_launch(gpu::launch_rms_norm(out.data_ptr(), input.data_ptr(), weight.data_ptr(), rows,
                                    input.size(-1), row_stride(input, op, "input"),
                                    row_stride(out, op, "out"), static_cast<float>(epsilon),
                                    kernel_dtype(input, op), current_stream()),
               op);
}

void fused_add_rms_norm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight,
                        double epsilon) {
  constexpr const char* op = "fused_add_rms_norm";
  check_norm_weight(weight, input, op);
  check_same(residual, input, op, "residual");
  const int64_t rows = num_rows(input);
  if (rows == 0) return;
  const at::cuda::OptionalCUDAGuard guard(input.device());
  check_launch(gpu::launch_fused_add_rms_norm(
                   input.data_ptr(), residual.data_ptr(), weight.data_ptr(), rows,
                   input.size(-1), row_stride(input, op, "input"),
                   row_stride(residual, op, "residual"), static_cast<float>(epsilon),
                   kernel_dtype(input, op), current_stream()),
               op);
}

namespace {

void run_activation(at::Tensor& out, const at::Tensor& input, gpu::Activation kind, bool gated,
                    const char* op) {
  const int64_t width = check_activation(out, input, gated, op);
  const int64_t rows = num_rows(input);
  if (rows == 0 || width == 0) return;
  const at::cuda::OptionalCUDAGuard guard(input.device());
  check_launch(gpu::launch_activation(out.data_ptr(), input.data_ptr(), rows, width,
                                      row_stride(input, op, "input"), row_stride(out, op, "out"),
                                      kind, gated, kernel_dtype(input, op), current_stream()),
               op);
}

}  // namespace

#define VLLM_CUDA_ACTIVATION(name, kind, gated)                      \
  void name(at::Tensor& out, const at::Tensor& input) {             \
    run_activation(out, input, gpu::Activation::kind, gated, #name); \
  }
VLLM_CUDA_ACTIVATION(silu_and_mul, kSilu, true)
VLLM_CUDA_ACTIVATION(gelu_and_mul, kGelu, true)
VLLM_CUDA_ACTIVATION(gelu_tanh_and_mul, kGeluTanh, true)
VLLM_CUDA_ACTIVATION(gelu_new, kGeluTanh, false)
VLLM_CUDA_ACTIVATION(gelu_fast, kGeluTanh, false)
VLLM_CUDA_ACTIVATION(gelu_quick, kGeluQuick, false)
#undef VLLM_CUDA_ACTIVATION

void rotary_embedding(const at::Tensor& positions, at::Tensor& query,
                      const std::optional<at::Tensor>& key, int64_t head_size,
                      const at::Tensor& cos_sin_cache, bool is_neox) {
  constexpr const char* op = "rotary_embedding";
  const RotaryShape s = check_rotary(positions, query, key, head_size, cos_sin_cache);
  if (s.num_tokens == 0) return;
  const at::cuda::OptionalCUDAGuard guard(query.device());
  check_launch(gpu::launch_rotary_embedding(
                   positions.data_ptr<int64_t>(), query.data_ptr(),
                   key.has_value() ? key->data_ptr() : nullptr, cos_sin_cache.data_ptr(),
                   s.num_tokens, s.num_heads, s.num_kv_heads, head_size, s.rot_dim,
                   s.query_stride, s.key_stride, is_neox, kernel_dtype(query, op),
                   current_stream()),
               op);
}

void reshape_and_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                       at::Tensor& value_cache, const at::Tensor& slot_mapping,
                       const std::string& kv_cache_dtype, const at::Tensor& k_scale,
                       const at::Tensor& v_scale) {
  constexpr const char* op = "reshape_and_cache";
  const CacheShape s =
      check_reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype);
  if (s.num_tokens == 0) return;
  const at::cuda::OptionalCUDAGuard guard(key.device());
  check_launch(gpu::launch_reshape_and_cache(
                   key.data_ptr(), value.data_ptr(), key_cache.data_ptr(),
                   value_cache.data_ptr(), slot_mapping.data_ptr<int64_t>(), s.num_tokens,
                   s.num_kv_heads, s.head_size, s.block_size, s.key_stride, s.value_stride,
                   key.element_size(), current_stream()),
               op);
}

void copy_blocks(const std::vector<at::Tensor>& key_caches,
                 const std::vector<at::Tensor>& value_caches, const at::Tensor& block_mapping) {
  constexpr const char* op = "copy_blocks";
  const std::vector<at::Tensor> caches = all_caches(key_caches, value_caches, op);
  if (caches.empty()) return;
  const int64_t num_blocks = caches[0].size(0);
  const int64_t block_bytes = check_block_caches(caches, op);
  TORCH_CHECK(caches[0].is_cuda(), op, ": caches must be CUDA tensors");
  std::vector<int64_t> ptrs;
  for (const at::Tensor& c : caches) ptrs.push_back(reinterpret_cast<int64_t>(c.data_ptr()));
  const at::Tensor pairs = check_block_mapping(block_mapping, num_blocks, num_blocks, op);
  if (pairs.size(0) == 0) return;
  const at::cuda::OptionalCUDAGuard guard(caches[0].device());
  const auto device = caches[0].device();
  const at::Tensor ptrs_dev =
      at::tensor(ptrs, at::TensorOptions().dtype(at::kLong)).to(device, /*non_blocking=*/true);
  const at::Tensor pairs_dev = pairs.to(device, /*non_blocking=*/true);
  check_launch(gpu::launch_copy_blocks(ptrs_dev.data_ptr<int64_t>(), int64_t(ptrs.size()),
                                       pairs_dev.data_ptr<int64_t>(), pairs.size(0), block_bytes,
                                       current_stream()),
               op);
}

// Between any two of device and host memory: cudaMemcpyDefault infers the
// direction from unified addressing.
void swap_blocks(const at::Tensor& src, at::Tensor& dst, const at::Tensor& block_mapping) {
  constexpr const char* op = "swap_blocks";
  TORCH_CHECK(src.is_contiguous() && dst.is_contiguous(), op, ": caches must be contiguous");
  TORCH_CHECK(src.scalar_type() == dst.scalar_type() && src.dim() == dst.dim() &&
                  src.sizes().slice(1) == dst.sizes().slice(1),
              op, ": src and dst must share dtype and block shape");
  const at::Tensor pairs = check_block_mapping(block_mapping, src.size(0), dst.size(0), op);
  const int64_t block_bytes = src.numel() / src.size(0) * src.element_size();
  const at::cuda::OptionalCUDAGuard guard(src.is_cuda() ? src.device() : dst.device());
  const auto stream = at::cuda::getCurrentCUDAStream().stream();
  const int64_t* p = pairs.data_ptr<int64_t>();
  const char* from = static_cast<const char*>(src.data_ptr());
  char* to = static_cast<char*>(dst.data_ptr());
  for (int64_t i = 0; i < pairs.size(0); ++i) {
    C10_CUDA_CHECK(cudaMemcpyAsync(to + p[2 * i + 1] * block_bytes, from + p[2 * i] * block_bytes,
                                   block_bytes, cudaMemcpyDefault, stream));
  }
}

}  // namespace vllm::cuda_ops

TORCH_LIBRARY_IMPL(_C, CUDA, ops) {
  ops.impl("rms_norm", &vllm::cuda_ops::rms_norm);
  ops.impl("fused_add_rms_norm", &vllm::cuda_ops::fused_add_rms_norm);
  ops.impl("silu_and_mul", &vllm::cuda_ops::silu_and_mul);
  ops.impl("gelu_and_mul", &vllm::cuda_ops::gelu_and_mul);
  ops.impl("gelu_tanh_and_mul", &vllm::cuda_ops::gelu_tanh_and_mul);
  ops.impl("gelu_new", &vllm::cuda_ops::gelu_new);
  ops.impl("gelu_fast", &vllm::cuda_ops::gelu_fast);
  ops.impl("gelu_quick", &vllm::cuda_ops::gelu_quick);
  ops.impl("rotary_embedding", &vllm::cuda_ops::rotary_embedding);
  ops.impl("reshape_and_cache", &vllm::cuda_ops::reshape_and_cache);
  ops.impl("copy_blocks", &vllm::cuda_ops::copy_blocks);
  ops.impl("swap_blocks", &vllm::cuda_ops::swap_blocks);
}
