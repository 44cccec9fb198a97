// Host launchers of the layernorm kernels: plain C++ types only, so the
// torch bindings (.cpp) and the device code (.cu) never share a header
// heavier than this.
#pragma once

#include <cstdint>

#include "../core/dtype.h"

namespace vllm::gpu {

using vllm::DType;

// Returns 0 on success, else the runtime's error code. `stream` is a
// cudaStream_t / hipStream_t.
int launch_rms_norm(void* out, const void* input, const void* weight, int64_t num_rows,
                    int64_t hidden, int64_t input_row_stride, int64_t out_row_stride,
                    float epsilon, DType dtype, void* stream);
int launch_fused_add_rms_norm(void* input, void* residual, const void* weight,
                              int64_t num_rows, int64_t hidden, int64_t input_row_stride,
                              int64_t residual_row_stride, float epsilon, DType dtype,
                              void* stream);
const char* error_string(int code);

}  // namespace vllm::gpu
