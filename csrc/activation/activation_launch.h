// Host launchers of the activation kernels (plain C++ types, torch-free).
#pragma once

#include <cstdint>

#include "../core/dtype.h"

namespace vllm::gpu {

enum class Activation : int { kSilu, kGelu, kGeluTanh, kGeluQuick };

// Gated: rows of 2 * width inputs -> width outputs; plain: width -> width.
// Returns 0 or the runtime's error code.
int launch_activation(void* out, const void* input, int64_t num_rows, int64_t width,
                      int64_t input_row_stride, int64_t out_row_stride, Activation kind,
                      bool gated, DType dtype, void* stream);

}  // namespace vllm::gpu
