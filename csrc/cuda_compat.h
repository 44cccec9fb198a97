// The few spellings that differ between CUDA and HIP (hipified sources are
// compiled with USE_ROCM). Device code includes only this and its own
// headers: no torch, so each .cu compiles in seconds.
#pragma once

#ifdef USE_ROCM
#include <hip/hip_runtime.h>
#include <hip/hip_fp16.h>
#include <hip/hip_bfloat16.h>
using vllm_bf16_t = hip_bfloat16;
using vllm_fp16_t = __half;
using vllm_stream_t = hipStream_t;
using vllm_error_t = hipError_t;
#define VLLM_SHFL_XOR(value, mask) __shfl_xor((value), (mask))
#define VLLM_LAUNCH_ERROR() hipGetLastError()
constexpr int kVllmWarpSize = 64;
#else
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
using vllm_bf16_t = __nv_bfloat16;
using vllm_fp16_t = __half;
using vllm_stream_t = cudaStream_t;
using vllm_error_t = cudaError_t;
#define VLLM_SHFL_XOR(value, mask) __shfl_xor_sync(0xffffffffu, (value), (mask))
#define VLLM_LAUNCH_ERROR() cudaGetLastError()
constexpr int kVllmWarpSize = 32;
#endif

namespace vllm::gpu {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(vllm_fp16_t x) { return __half2float(x); }
__device__ __forceinline__ float to_float(vllm_bf16_t x) { return static_cast<float>(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ vllm_fp16_t from_float<vllm_fp16_t>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ vllm_bf16_t from_float<vllm_bf16_t>(float x) {
#ifdef USE_ROCM
  return vllm_bf16_t(x);
#else
  return __float2bfloat16_rn(x);
#endif
}

// Max / sum over a warp (a 64-wide wavefront on ROCm); every lane gets it.
__device__ __forceinline__ float warp_max(float v) {
  for (int mask = kVllmWarpSize / 2; mask > 0; mask >>= 1) v = fmaxf(v, VLLM_SHFL_XOR(v, mask));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int mask = kVllmWarpSize / 2; mask > 0; mask >>= 1) v += VLLM_SHFL_XOR(v, mask);
  return v;
}

// Sum over the block; every thread gets the result. blockDim.x must be a
// multiple of the warp size.
__device__ __forceinline__ float block_sum(float value) {
  __shared__ float warp_sums[1024 / kVllmWarpSize];
  __shared__ float total;
  value = warp_sum(value);
  const int lane = threadIdx.x % kVllmWarpSize, warp = threadIdx.x / kVllmWarpSize;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  if (warp == 0) {
    const int num_warps = blockDim.x / kVllmWarpSize;
    float v = lane < num_warps ? warp_sums[lane] : 0.f;
    for (int mask = kVllmWarpSize / 2; mask > 0; mask >>= 1) v += VLLM_SHFL_XOR(v, mask);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

}  // namespace vllm::gpu
