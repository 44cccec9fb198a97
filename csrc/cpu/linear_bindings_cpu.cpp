// CPU-only ops, defined in the CPU build only: small_m_linear, behind Linear
// layers for decode-sized batches (see csrc/cpu/linear.cpp; GPUs use their
// GEMM libraries for these shapes), and greedy_argmax, greedy sampling
// straight from 16-bit logits (csrc/cpu/argmax.cpp).
#include <torch/library.h>

#include "../core/tensor_checks.h"
#include "kernel_table.h"

namespace vllm::cpu_ops {

void small_m_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "small_m_linear";
  TORCH_CHECK(input.dim() == 2 && weight.dim() == 2 && out.dim() == 2, op,
              ": input [m, k], weight [n, k] and out [m, n] must be 2-D");
  const int64_t m = input.size(0), k = input.size(1), n = weight.size(0);
  TORCH_CHECK(weight.size(1) == k, op, ": weight is ", weight.sizes(), " but input has ", k,
              " features");
  TORCH_CHECK(out.size(0) == m && out.size(1) == n, op, ": out must be [", m, ", ", n,
              "], got ", out.sizes());
  TORCH_CHECK(weight.is_contiguous(), op, ": weight must be contiguous");
  check_same_dtype_device(weight, input, op, "weight");
  check_same_dtype_device(out, input, op, "out");
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == n && bias->is_contiguous(), op,
                ": bias must be a contiguous [", n, "] tensor");
    check_same_dtype_device(*bias, input, op, "bias");
  }
  cpu::LinearArgs args{out.data_ptr(), input.data_ptr(), weight.data_ptr(),
                       bias.has_value() ? bias->data_ptr() : nullptr, m, n, k,
                       row_stride(input, op, "input"), row_stride(out, op, "out"),
                       kernel_dtype(input, op)};
  if (m > 0 && n > 0) cpu::active_kernels().small_m_linear(args);
}

void greedy_argmax(at::Tensor& out, const at::Tensor& logits) {
  constexpr const char* op = "greedy_argmax";
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) > 0, op,
              ": logits must be [rows, vocab] with vocab > 0, got ", logits.sizes());
  TORCH_CHECK(out.dim() == 1 && out.size(0) == logits.size(0) && out.scalar_type() == at::kLong &&
                  out.is_contiguous(), op, ": out must be a contiguous int64 [", logits.size(0),
              "] tensor, got ", out.scalar_type(), " ", out.sizes());
  TORCH_CHECK(out.device() == logits.device(), op, ": out and logits must share a device");
  cpu::ArgmaxArgs args{out.data_ptr<int64_t>(), logits.data_ptr(), logits.size(0),
                       logits.size(1), row_stride(logits, op, "logits"),
                       kernel_dtype(logits, op)};
  if (args.num_rows > 0) cpu::active_kernels().argmax_rows(args);
}

TORCH_LIBRARY_FRAGMENT(_C, ops) {
  ops.def("small_m_linear(Tensor! out, Tensor input, Tensor weight, Tensor? bias) -> ()");
  // out[r] = argmax of logits[r] (first maximum; first NaN if any), int64.
  ops.def("greedy_argmax(Tensor! out, Tensor logits) -> ()");
}

TORCH_LIBRARY_IMPL(_C, CPU, ops) {
  ops.impl("small_m_linear", &small_m_linear);
  ops.impl("greedy_argmax", &greedy_argmax);
}

}  // namespace vllm::cpu_ops
