// CPU implementations of the _C ops: argument checks, then the kernel table
// of the ISA variant chosen at load time.
#include <torch/library.h>

#include "../ops.h"
#include "kernel_table.h"

namespace {

using vllm::cpu::DType;

DType to_kernel_dtype(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    default:
      TORCH_CHECK(false, op, ": unsupported dtype ", t.scalar_type(),
                  " (float32, bfloat16 and float16 are supported)");
  }
}

// Rows of the last dim: the last dim must be dense and the leading dims must
// collapse into one stride (true for contiguous tensors and 2-D row slices).
int64_t row_stride(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() >= 1, op, ": ", name, " must have at least one dim");
  TORCH_CHECK(t.stride(-1) == 1 || t.size(-1) == 1, op, ": ", name,
              " must be contiguous in its last dim");
  if (t.dim() == 1) return t.size(-1);
  if (t.dim() == 2) return t.stride(0);
  TORCH_CHECK(t.is_contiguous(), op, ": ", name,
              " with more than 2 dims must be contiguous");
  return t.size(-1);
}

void check_weight(const at::Tensor& weight, const at::Tensor& input, const char* op) {
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == input.size(-1), op,
              ": weight must be 1-D of size ", input.size(-1), ", got ", weight.sizes());
  TORCH_CHECK(weight.is_contiguous(), op, ": weight must be contiguous");
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), op,
              ": weight dtype ", weight.scalar_type(), " differs from input dtype ",
              input.scalar_type());
}

void check_cpu(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.device().is_cpu(), op, ": expected CPU tensors, got ", t.device());
}

}  // namespace

void rms_norm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
              double epsilon) {
  constexpr const char* op = "rms_norm";
  check_cpu(input, op);
  check_weight(weight, input, op);
  TORCH_CHECK(out.sizes() == input.sizes(), op, ": out shape ", out.sizes(),
              " differs from input shape ", input.sizes());
  TORCH_CHECK(out.scalar_type() == input.scalar_type(), op, ": out dtype differs from input");
  const int64_t hidden = input.size(-1);
  vllm::cpu::RmsNormArgs args{out.data_ptr(), input.data_ptr(), weight.data_ptr(),
                              hidden == 0 ? 0 : input.numel() / hidden, hidden,
                              row_stride(input, op, "input"), row_stride(out, op, "out"),
                              static_cast<float>(epsilon), to_kernel_dtype(input, op)};
  if (args.num_rows > 0 && hidden > 0) vllm::cpu::active_kernels().rms_norm(args);
}

void fused_add_rms_norm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight,
                        double epsilon) {
  constexpr const char* op = "fused_add_rms_norm";
  check_cpu(input, op);
  check_weight(weight, input, op);
  TORCH_CHECK(residual.sizes() == input.sizes(), op, ": residual shape ",
              residual.sizes(), " differs from input shape ", input.sizes());
  TORCH_CHECK(residual.scalar_type() == input.scalar_type(), op,
              ": residual dtype differs from input");
  const int64_t hidden = input.size(-1);
  vllm::cpu::FusedAddRmsNormArgs args{
      input.data_ptr(), residual.data_ptr(), weight.data_ptr(),
      hidden == 0 ? 0 : input.numel() / hidden, hidden,
      row_stride(input, op, "input"), row_stride(residual, op, "residual"),
      static_cast<float>(epsilon), to_kernel_dtype(input, op)};
  if (args.num_rows > 0 && hidden > 0) vllm::cpu::active_kernels().fused_add_rms_norm(args);
}

TORCH_LIBRARY_IMPL(_C, CPU, ops) {
  ops.impl("rms_norm", &rms_norm);
  ops.impl("fused_add_rms_norm", &fused_add_rms_norm);
}
