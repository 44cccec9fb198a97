// Host launchers of the AWQ kernels (plain C++ types, torch-free).
//
// AWQ's GEMM-version layout: qweight int32 [k, n / 8], each word holding 8
// columns' 4-bit values with column c in nibble (c % 2) * 4 + c / 2 (the
// 0, 2, 4, 6, 1, 3, 5, 7 packing order); zeros int32 [k / g, n / 8]
// packed alike; scales [k / g, n]; w = (q - z) * s.
#pragma once

#include <cstdint>

#include "../core/dtype.h"

namespace vllm::gpu {

// out [k, n] (scales' dtype) = the dequantized weight. Returns 0 or the
// runtime's error code.
int launch_awq_dequantize(void* out, const int32_t* qweight, const void* scales,
                          const int32_t* zeros, int64_t k, int64_t n, int64_t group,
                          DType dtype, void* stream);

// out [m, n] = input [m, k] (contiguous) @ the AWQ weight, fp32
// accumulation, in input's dtype (scales share it).
int launch_awq_gemm(void* out, const void* input, const int32_t* qweight, const void* scales,
                    const int32_t* zeros, int64_t m, int64_t n, int64_t k, int64_t group,
                    DType dtype, void* stream);

}  // namespace vllm::gpu
