// CUDA (and, hipified, ROCm) implementations of the _C ops: shared argument
// checks, then the torch-free launchers in the .cu files.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../core/tensor_checks.h"
#include "../layernorm/layernorm_launch.h"

namespace vllm::cuda_ops {
namespace {

void check_launch(int code, const char* op) {
  TORCH_CHECK(code == 0, op, ": kernel launch failed: ", gpu::error_string(code));
}

void* current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }

}  // namespace

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

}  // namespace vllm::cuda_ops

TORCH_LIBRARY_IMPL(_C, CUDA, ops) {
  ops.impl("rms_norm", &vllm::cuda_ops::rms_norm);
  ops.impl("fused_add_rms_norm", &vllm::cuda_ops::fused_add_rms_norm);
}
