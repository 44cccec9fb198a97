// CPU implementations of the _C ops: shared argument checks, then the kernel
// table of the ISA variant chosen at load time.
#include <torch/library.h>

#include "../core/tensor_checks.h"
#include "kernel_table.h"

namespace vllm::cpu_ops {

void rms_norm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
              double epsilon) {
  constexpr const char* op = "rms_norm";
  check_norm_weight(weight, input, op);
  check_same(out, input, op, "out");
  cpu::RmsNormArgs args{out.data_ptr(), input.data_ptr(), weight.data_ptr(),
                        num_rows(input), input.size(-1), row_stride(input, op, "input"),
                        row_stride(out, op, "out"), static_cast<float>(epsilon),
                        kernel_dtype(input, op)};
  if (args.num_rows > 0) cpu::active_kernels().rms_norm(args);
}

void fused_add_rms_norm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight,
                        double epsilon) {
  constexpr const char* op = "fused_add_rms_norm";
  check_norm_weight(weight, input, op);
  check_same(residual, input, op, "residual");
  cpu::FusedAddRmsNormArgs args{
      input.data_ptr(), residual.data_ptr(), weight.data_ptr(), num_rows(input),
      input.size(-1), row_stride(input, op, "input"), row_stride(residual, op, "residual"),
      static_cast<float>(epsilon), kernel_dtype(input, op)};
  if (args.num_rows > 0) cpu::active_kernels().fused_add_rms_norm(args);
}

}  // namespace vllm::cpu_ops

TORCH_LIBRARY_IMPL(_C, CPU, ops) {
  ops.impl("rms_norm", &vllm::cpu_ops::rms_norm);
  ops.impl("fused_add_rms_norm", &vllm::cpu_ops::fused_add_rms_norm);
}
