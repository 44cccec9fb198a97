// What the bindings of the packed-GEMM ops (packed_linear, its gated twin,
// packed_moe_experts) check alike: that the active kernel variant has the
// kernel, and the gated activation's name (those the models and
// fused_decode_layers use).
#pragma once

#include <c10/util/Exception.h>

#include <string>

#include "kernel_table.h"

namespace vllm::cpu_ops {

// `available`: the active table's entry for the op is set (the scalar
// variant has none).
inline void check_packed_kernel(bool available, const char* op) {
  TORCH_CHECK(available, op,
              ": needs the AVX512-BF16 or AVX2 CPU kernels; the active variant is ",
              cpu::active_kernels().isa);
}

inline cpu::Activation gated_activation(const std::string& name, const char* op) {
  if (name == "silu") return cpu::Activation::kSilu;
  if (name == "gelu") return cpu::Activation::kGelu;
  if (name == "gelu_pytorch_tanh") return cpu::Activation::kGeluTanh;
  TORCH_CHECK(false, op, ": activation '", name, "' is not one of silu, gelu, gelu_pytorch_tanh");
}

}  // namespace vllm::cpu_ops
