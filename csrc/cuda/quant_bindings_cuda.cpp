// CUDA (and, hipified, ROCm) AWQ ops with vLLM's schemas:
// torch.ops._C.awq_dequantize and awq_gemm (the torch-free launchers are in
// csrc/quantization/awq_kernels.cu). GPU builds only: on CPU the same
// Python entry points (vllm._custom_ops) run our quant_linear kernel.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../core/tensor_checks.h"
#include "../quantization/awq_launch.h"
#include "launch_checks.h"

namespace vllm::cuda_ops {
namespace {

// (k, n, group) of an AWQ weight; errors name the tensor that disagrees.
struct AwqShape {
  int64_t k, n, group;
};

AwqShape check_awq(const at::Tensor& qweight, const at::Tensor& scales, const at::Tensor& zeros,
                   const char* op) {
  TORCH_CHECK(qweight.dim() == 2 && qweight.scalar_type() == at::kInt && qweight.is_contiguous(),
              op, ": qweight must be a contiguous 2-D int32 tensor, got ", qweight.scalar_type(),
              " ", qweight.sizes());
  const int64_t k = qweight.size(0), n = qweight.size(1) * 8;
  TORCH_CHECK(scales.dim() == 2 && scales.size(1) == n && scales.size(0) > 0 &&
                  k % scales.size(0) == 0 && scales.is_contiguous(),
              op, ": scales must be contiguous [k / group, ", n, "] with the group dividing k = ",
              k, ", got ", scales.sizes());
  const int64_t groups = scales.size(0);
  TORCH_CHECK(zeros.dim() == 2 && zeros.size(0) == groups && zeros.size(1) == n / 8 &&
                  zeros.scalar_type() == at::kInt && zeros.is_contiguous(),
              op, ": qzeros must be contiguous int32 [", groups, ", ", n / 8, "], got ",
              zeros.scalar_type(), " ", zeros.sizes());
  TORCH_CHECK(qweight.is_cuda() && scales.device() == qweight.device() &&
                  zeros.device() == qweight.device(),
              op, ": qweight, scales and qzeros must be on one GPU");
  return {k, n, k / groups};
}

at::Tensor awq_dequantize(const at::Tensor& qweight, const at::Tensor& scales,
                          const at::Tensor& zeros, c10::SymInt split_k_iters, int64_t thx,
                          int64_t thy) {
  const AwqShape s = check_awq(qweight, scales, zeros, "awq_dequantize");
  at::Tensor out = at::empty({s.k, s.n}, scales.options());
  if (out.numel() == 0) return out;
  const at::cuda::OptionalCUDAGuard guard(qweight.device());
  check_launch(gpu::launch_awq_dequantize(out.data_ptr(), qweight.data_ptr<int32_t>(),
                                          scales.data_ptr(), zeros.data_ptr<int32_t>(), s.k,
                                          s.n, s.group, kernel_dtype(scales, "awq_dequantize"),
                                          current_stream()),
               "awq_dequantize");
  return out;
}

at::Tensor awq_gemm(const at::Tensor& input, const at::Tensor& qweight, const at::Tensor& scales,
                    const at::Tensor& zeros, c10::SymInt split_k_iters) {
  const AwqShape s = check_awq(qweight, scales, zeros, "awq_gemm");
  TORCH_CHECK(input.dim() == 2 && input.size(1) == s.k, "awq_gemm: input must be [m, ", s.k,
              "], got ", input.sizes());
  check_same_dtype_device(scales, input, "awq_gemm", "scales");
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty({x.size(0), s.n}, x.options());
  const at::cuda::OptionalCUDAGuard guard(input.device());
  check_launch(gpu::launch_awq_gemm(out.data_ptr(), x.data_ptr(), qweight.data_ptr<int32_t>(),
                                    scales.data_ptr(), zeros.data_ptr<int32_t>(), x.size(0), s.n,
                                    s.k, s.group, kernel_dtype(x, "awq_gemm"), current_stream()),
               "awq_gemm");
  return out;
}

}  // namespace
}  // namespace vllm::cuda_ops

TORCH_LIBRARY_FRAGMENT(_C, ops) {
  ops.def(
      "awq_dequantize(Tensor qweight, Tensor scales, Tensor zeros, SymInt split_k_iters, "
      "int thx, int thy) -> Tensor");
  ops.def(
      "awq_gemm(Tensor _in_feats, Tensor _kernel, Tensor _scaling_factors, Tensor _zeros, "
      "SymInt split_k_iters) -> Tensor");
}

TORCH_LIBRARY_IMPL(_C, CUDA, ops) {
  ops.impl("awq_dequantize", &vllm::cuda_ops::awq_dequantize);
  ops.impl("awq_gemm", &vllm::cuda_ops::awq_gemm);
}
