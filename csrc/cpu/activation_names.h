// The gated activation names the CPU bindings accept (those the models and
// fused_decode_layers use), shared so every op names them alike.
#pragma once

#include <c10/util/Exception.h>

#include <string>

#include "kernel_table.h"

namespace vllm::cpu_ops {

inline cpu::Activation gated_activation(const std::string& name, const char* op) {
  if (name == "silu") return cpu::Activation::kSilu;
  if (name == "gelu") return cpu::Activation::kGelu;
  if (name == "gelu_pytorch_tanh") return cpu::Activation::kGeluTanh;
  TORCH_CHECK(false, op, ": activation '", name, "' is not one of silu, gelu, gelu_pytorch_tanh");
}

}  // namespace vllm::cpu_ops
