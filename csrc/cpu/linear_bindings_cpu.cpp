// CPU-only ops, defined in the CPU build only: packed_linear, behind bf16
// Linear layers on AVX512-BF16 and AVX2 CPUs at every row count, and its gated twin
// behind the gated MLPs' gate/up projection (csrc/cpu/packed_linear.cpp);
// small_m_linear, behind them elsewhere for decode-sized batches
// (csrc/cpu/linear.cpp; GPUs use their GEMM libraries for these shapes); and
// greedy_argmax, greedy sampling straight from 16-bit logits
// (csrc/cpu/argmax.cpp).
#include <torch/library.h>

#include "../core/tensor_checks.h"
#include "cpu_ops.h"  // the declarations the fused layer loop calls: checked here
#include "packed_op_checks.h"
#include "kernel_table.h"

namespace vllm::cpu_ops {
namespace {

// Checks out and bias against input (n outputs) and gathers the kernel's
// arguments; `weight` is the plain or packed weight, already checked.
cpu::LinearArgs linear_args(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, int64_t n, int64_t k,
                            const char* op) {
  check_same_dtype_device(out, input, op, "out");
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == n && bias->is_contiguous(), op,
                ": bias must be a contiguous [", n, "] tensor");
    check_same_dtype_device(*bias, input, op, "bias");
  }
  return cpu::LinearArgs{out.data_ptr(), input.data_ptr(), weight.data_ptr(),
                         bias.has_value() ? bias->data_ptr() : nullptr, input.size(0), n, k,
                         row_stride(input, op, "input"), row_stride(out, op, "out"),
                         kernel_dtype(input, op)};
}

// packed_linear's checks: input [m, k] bf16, out [m, *] with contiguous
// rows, packed as kPackedLinearPanel describes for n x k, bias [n].
cpu::LinearArgs packed_linear_args(at::Tensor& out, const at::Tensor& input,
                                   const at::Tensor& packed, const std::optional<at::Tensor>& bias,
                                   int64_t n, const char* op) {
  constexpr int64_t panel = cpu::kPackedLinearPanel;
  TORCH_CHECK(input.dim() == 2 && out.dim() == 2, op, ": input [m, k] and out [m, n] must be 2-D");
  TORCH_CHECK(input.scalar_type() == at::kBFloat16, op, ": bf16 only, got ", input.scalar_type());
  const int64_t m = input.size(0), k = input.size(1);
  TORCH_CHECK(out.size(0) == m, op, ": out has ", out.size(0), " rows, input ", m);
  TORCH_CHECK(k % 2 == 0, op, ": k must be even, got ", k);
  TORCH_CHECK(packed.dim() == 4 && packed.size(0) == (n + panel - 1) / panel &&
                  packed.size(1) == k / 2 && packed.size(2) == panel && packed.size(3) == 2 &&
                  packed.is_contiguous(),
              op, ": packed weight must be a contiguous [", (n + panel - 1) / panel, ", ", k / 2,
              ", ", panel, ", 2] tensor for n=", n, ", k=", k, "; got ", packed.sizes());
  TORCH_CHECK(input.stride(1) == 1 && out.stride(1) == 1, op,
              ": input and out rows must be contiguous");
  check_same_dtype_device(packed, input, op, "packed");
  return linear_args(out, input, packed, bias, n, k, op);
}

}  // namespace

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
  const cpu::LinearArgs args = linear_args(out, input, weight, bias, n, k, op);
  if (m > 0 && n > 0) cpu::active_kernels().small_m_linear(args);
}

// out = input W^T (+ bias), bf16, with W packed as kPackedLinearPanel
// describes (vllm.model_executor.layers.linear.pack_weight_pairs); n is
// out's width. Needs the AVX512-BF16 or AVX2 kernel variant.
cpu::LinearArgs checked_packed_linear_args(at::Tensor& out, const at::Tensor& input,
                                           const at::Tensor& packed,
                                           const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "packed_linear";
  check_packed_kernel(cpu::active_kernels().packed_linear != nullptr, op);
  TORCH_CHECK(out.dim() == 2, op, ": out must be [m, n], got ", out.sizes());
  return packed_linear_args(out, input, packed, bias, out.size(1), op);
}

void packed_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& packed,
                   const std::optional<at::Tensor>& bias) {
  const cpu::LinearArgs args = checked_packed_linear_args(out, input, packed, bias);
  if (args.m > 0 && args.n > 0) cpu::active_kernels().packed_linear(args);
}

// out = act(input W_gate^T (+ b_gate)) * (input W_up^T (+ b_up)), bf16;
// `packed` [ceil(d / 48), 2, k / 2, 48, 2] holds W_gate's and W_up's panels
// (as packed_linear packs them, zero columns past d) interleaved: [j][0] gate
// panel j, [j][1] up panel j (vllm.model_executor.layers.linear.
// pack_gate_up_pairs); bias, if any, is [b_gate; b_up]; out is [m, d].
// `activation`: silu, gelu, gelu_pytorch_tanh (the names fused_decode_layers
// and the models use). Same bits as the projection followed by the
// *_and_mul op.
cpu::LinearArgs checked_packed_linear_gated_args(at::Tensor& out, const at::Tensor& input,
                                                 const at::Tensor& packed,
                                                 const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "packed_linear_gated";
  constexpr int64_t panel = cpu::kPackedLinearPanel;
  check_packed_kernel(cpu::active_kernels().packed_linear_gated != nullptr, op);
  TORCH_CHECK(out.dim() == 2, op, ": out must be [m, d], got ", out.sizes());
  const int64_t d = out.size(1), pairs = (d + panel - 1) / panel;
  TORCH_CHECK(input.dim() == 2, op, ": input must be [m, k], got ", input.sizes());
  const int64_t k = input.size(1);
  TORCH_CHECK(packed.dim() == 5 && packed.size(0) == pairs && packed.size(1) == 2 &&
                  packed.size(2) == k / 2 && packed.size(3) == panel && packed.size(4) == 2 &&
                  packed.is_contiguous(),
              op, ": packed weight must be a contiguous [", pairs, ", 2, ", k / 2, ", ", panel,
              ", 2] tensor (gate and up panels interleaved) for d=", d, ", k=", k, "; got ",
              packed.sizes());
  // The rest checked as packed_linear over the 2 * pairs panels (gate and up
  // outputs, each half padded to whole panels; out holds d).
  packed_linear_args(out, input, packed.flatten(0, 1), std::nullopt, 2 * pairs * panel, op);
  return linear_args(out, input, packed, bias, 2 * d, k, op);
}

void packed_linear_gated(at::Tensor& out, const at::Tensor& input, const at::Tensor& packed,
                         const std::optional<at::Tensor>& bias, const std::string& activation) {
  const cpu::Activation kind = gated_activation(activation, "packed_linear_gated");
  const cpu::LinearArgs args = checked_packed_linear_gated_args(out, input, packed, bias);
  if (args.m > 0 && args.n > 0) cpu::active_kernels().packed_linear_gated(args, kind);
}

cpu::Activation gated_activation_kind(const std::string& activation) {
  return gated_activation(activation, "packed_linear_gated");
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
  // bf16 out = input W^T (+ bias) on a weight packed in 48-column panels of
  // (k, k+1) pairs (AVX512-BF16 and AVX2 CPUs).
  ops.def("packed_linear(Tensor! out, Tensor input, Tensor packed, Tensor? bias) -> ()");
  // bf16 out = act(input W_gate^T) * (input W_up^T) on W_gate's and W_up's
  // panels packed as for packed_linear, interleaved: a gated MLP's gate/up
  // projection and its activation in one pass.
  ops.def(
      "packed_linear_gated(Tensor! out, Tensor input, Tensor packed, Tensor? bias, "
      "str activation) -> ()");
}

TORCH_LIBRARY_IMPL(_C, CPU, ops) {
  ops.impl("small_m_linear", &small_m_linear);
  ops.impl("greedy_argmax", &greedy_argmax);
  ops.impl("packed_linear", &packed_linear);
  ops.impl("packed_linear_gated", &packed_linear_gated);
}

}  // namespace vllm::cpu_ops
