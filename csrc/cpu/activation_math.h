// The activation functions on FloatVec, shared by the activation kernels
// (activation.cpp) and packed_linear's gated epilogue (packed_linear.cpp),
// so the fused gate/up projection computes the same bits as the two ops.
#pragma once

#include "kernel_table.h"
#include "vec.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

template <Activation kKind>
inline FloatVec apply_activation(FloatVec x) {
  if constexpr (kKind == Activation::kSilu) {
    return x * sigmoid(x);
  } else if constexpr (kKind == Activation::kGelu) {
    // 0.5 x (1 + erf(x / sqrt 2))
    return FloatVec(0.5f) * x * one_plus_erf(x * FloatVec(0.70710678118654752f));
  } else if constexpr (kKind == Activation::kGeluQuick) {
    return x * sigmoid(FloatVec(1.702f) * x);
  } else {
    // tanh approximation (gelu_tanh, gelu_new, gelu_fast are the same
    // function): 0.5 x (1 + tanh(y)) = x * sigmoid(2y),
    // y = sqrt(2/pi) (x + 0.044715 x^3).
    const FloatVec inner = FloatVec::fma(FloatVec(0.044715f) * x, x, FloatVec(1.0f));
    return x * sigmoid(FloatVec(2.0f * 0.79788456080286536f) * x * inner);
  }
}

}  // namespace
}  // namespace vllm::cpu::VLLM_ISA_NS
