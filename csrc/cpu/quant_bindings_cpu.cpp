// quant_linear: a linear layer on 4/8-bit weights repacked at load
// (vllm.model_executor.layers.quantization.packing), behind GGUF, AWQ and
// GPTQ checkpoints on CPU (csrc/cpu/quant_linear.cpp). CPU builds only.
#include <torch/library.h>

#include "../core/tensor_checks.h"
#include "cpu_ops.h"
#include "kernel_table.h"

namespace vllm::cpu_ops {

// out [m, n] = input [m, k] W^T (+ bias [n]) with W packed as QuantLinearArgs
// describes: packed is uint8 [ceil(n / 48), k / group_size, 192 + 48 *
// group_size * bits / 8]; n is out's width. fp32, bf16 or fp16 activations:
// x quantized to int8 per 32-block, or (bf16, more than int8_max_rows rows,
// a variant with packed_linear) the weight expanded to bf16 panel by panel.
void quant_linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& packed,
                  int64_t bits, int64_t group_size, const std::optional<at::Tensor>& bias,
                  int64_t int8_max_rows) {
  constexpr const char* op = "quant_linear";
  constexpr int64_t panel = cpu::kQuantPanel;
  TORCH_CHECK(cpu::active_kernels().quant_linear != nullptr, op,
              ": needs the AVX512-VNNI, AVX2 or scalar CPU kernels; the active variant is ",
              cpu::active_kernels().isa);
  TORCH_CHECK(input.dim() == 2 && out.dim() == 2, op, ": input [m, k] and out [m, n] must be 2-D");
  const int64_t m = input.size(0), k = input.size(1), n = out.size(1);
  TORCH_CHECK(out.size(0) == m, op, ": out has ", out.size(0), " rows, input ", m);
  TORCH_CHECK(bits == 4 || bits == 8, op, ": bits must be 4 or 8, got ", bits);
  TORCH_CHECK(group_size == 16 || (group_size > 0 && group_size % cpu::kQuantActBlock == 0), op,
              ": group_size must be 16 or a multiple of 32, got ", group_size);
  TORCH_CHECK(k % cpu::kQuantActBlock == 0 && k % group_size == 0, op, ": k = ", k,
              " must be a multiple of 32 and of group_size ", group_size);
  const int64_t group_bytes = cpu::kQuantHeaderBytes + panel * group_size * bits / 8;
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.dim() == 3 &&
                  packed.size(0) == (n + panel - 1) / panel && packed.size(1) == k / group_size &&
                  packed.size(2) == group_bytes && packed.is_contiguous(),
              op, ": packed weight must be a contiguous uint8 [", (n + panel - 1) / panel, ", ",
              k / group_size, ", ", group_bytes, "] tensor for n=", n, ", k=", k, ", ", bits,
              "-bit, group ", group_size, "; got ", packed.scalar_type(), " ", packed.sizes());
  TORCH_CHECK(packed.device() == input.device(), op, ": packed and input must share a device");
  check_same_dtype_device(out, input, op, "out");
  TORCH_CHECK(input.stride(1) == 1 && out.stride(1) == 1, op,
              ": input and out rows must be contiguous");
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == n && bias->is_contiguous(), op,
                ": bias must be a contiguous [", n, "] tensor");
    check_same_dtype_device(*bias, input, op, "bias");
  }
  const cpu::QuantLinearArgs args{out.data_ptr(), input.data_ptr(), packed.data_ptr<uint8_t>(),
                                  bias.has_value() ? bias->data_ptr() : nullptr, m, n, k,
                                  group_size, int(bits), int8_max_rows,
                                  row_stride(input, op, "input"),
                                  row_stride(out, op, "out"), kernel_dtype(input, op)};
  if (m > 0 && n > 0) cpu::active_kernels().quant_linear(args);
}

TORCH_LIBRARY_FRAGMENT(_C, ops) {
  // out = input W^T (+ bias) on a 4/8-bit weight packed by
  // vllm.model_executor.layers.quantization.packing.pack_quantized.
  ops.def(
      "quant_linear(Tensor! out, Tensor input, Tensor packed, int bits, int group_size, "
      "Tensor? bias, int int8_max_rows=1073741824) -> ()");
}

TORCH_LIBRARY_IMPL(_C, CPU, ops) { ops.impl("quant_linear", &quant_linear); }

}  // namespace vllm::cpu_ops
