// AWQ on GPUs: dequantize, and a tiled GEMM that unpacks each weight tile
// into shared memory once per block (no dequantized weight in global
// memory). fp32 FMAs, no tensor cores: the straightforward kernel the
// faster Marlin-class ones are checked against. Hipify-clean.
#include "../cuda_compat.h"
#include "awq_launch.h"

namespace vllm::gpu {
namespace {

// the bit offset of column `col`'s value in its word
__device__ __forceinline__ int awq_shift(int64_t col) {
  const int c = int(col & 7);
  return ((c & 1) * 4 + (c >> 1)) * 4;
}

__device__ __forceinline__ float awq_weight(const int32_t* qweight, const int32_t* zeros,
                                            float scale, int64_t row, int64_t col, int64_t n,
                                            int64_t group) {
  const int64_t words = n / 8;
  const int shift = awq_shift(col);
  const int q = (qweight[row * words + col / 8] >> shift) & 15;
  const int z = (zeros[(row / group) * words + col / 8] >> shift) & 15;
  return float(q - z) * scale;
}

template <typename T>
__global__ void awq_dequantize_kernel(T* __restrict__ out, const int32_t* __restrict__ qweight,
                                      const T* __restrict__ scales,
                                      const int32_t* __restrict__ zeros, int64_t k, int64_t n,
                                      int64_t group) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= k * n) return;
  const int64_t row = i / n, col = i % n;
  const float scale = to_float(scales[(row / group) * n + col]);
  out[i] = from_float<T>(awq_weight(qweight, zeros, scale, row, col, n, group));
}

// A block computes kBM rows x kBN columns with 256 threads, kBK inputs a
// step: x's tile and the unpacked weight tile in shared memory (the
// weight's padded row avoids bank conflicts), 4 outputs a thread.
constexpr int kBM = 16, kBN = 64, kBK = 32, kThreads = 256;
constexpr int kRowsPerThread = kBM * kBN / kThreads;

template <typename T>
__global__ void __launch_bounds__(kThreads)
awq_gemm_kernel(T* __restrict__ out, const T* __restrict__ x, const int32_t* __restrict__ qweight,
                const T* __restrict__ scales, const int32_t* __restrict__ zeros, int64_t m,
                int64_t n, int64_t k, int64_t group) {
  __shared__ float xs[kBM][kBK + 1];
  __shared__ float ws[kBK][kBN + 1];
  const int64_t col0 = int64_t(blockIdx.x) * kBN, row0 = int64_t(blockIdx.y) * kBM;
  const int tid = threadIdx.x;
  const int my_col = tid % kBN, my_row = tid / kBN;  // rows my_row + 4 i
  float acc[kRowsPerThread] = {};
  for (int64_t k0 = 0; k0 < k; k0 += kBK) {
    for (int i = tid; i < kBM * kBK; i += kThreads) {
      const int r = i / kBK, kk = i % kBK;
      const bool inside = row0 + r < m && k0 + kk < k;
      xs[r][kk] = inside ? to_float(x[(row0 + r) * k + k0 + kk]) : 0.0f;
    }
    for (int i = tid; i < kBK * kBN; i += kThreads) {
      const int kk = i / kBN, c = i % kBN;
      const int64_t row = k0 + kk, col = col0 + c;
      float w = 0.0f;
      if (row < k && col < n) {
        w = awq_weight(qweight, zeros, to_float(scales[(row / group) * n + col]), row, col, n,
                       group);
      }
      ws[kk][c] = w;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kBK; ++kk) {
      const float w = ws[kk][my_col];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i)
        acc[i] = fmaf(xs[my_row + i * (kThreads / kBN)][kk], w, acc[i]);
    }
    __syncthreads();
  }
  const int64_t col = col0 + my_col;
  if (col >= n) return;
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int64_t row = row0 + my_row + i * (kThreads / kBN);
    if (row < m) out[row * n + col] = from_float<T>(acc[i]);
  }
}

template <typename T>
int dequantize_typed(void* out, const int32_t* qweight, const void* scales, const int32_t* zeros,
                     int64_t k, int64_t n, int64_t group, vllm_stream_t stream) {
  const int64_t total = k * n;
  const unsigned blocks = unsigned((total + 255) / 256);
  awq_dequantize_kernel<T><<<blocks, 256, 0, stream>>>(static_cast<T*>(out), qweight,
                                                       static_cast<const T*>(scales), zeros, k,
                                                       n, group);
  return int(VLLM_LAUNCH_ERROR());
}

template <typename T>
int gemm_typed(void* out, const void* input, const int32_t* qweight, const void* scales,
               const int32_t* zeros, int64_t m, int64_t n, int64_t k, int64_t group,
               vllm_stream_t stream) {
  const dim3 grid{unsigned((n + kBN - 1) / kBN), unsigned((m + kBM - 1) / kBM)};
  awq_gemm_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<T*>(out), static_cast<const T*>(input), qweight, static_cast<const T*>(scales),
      zeros, m, n, k, group);
  return int(VLLM_LAUNCH_ERROR());
}

}  // namespace

int launch_awq_dequantize(void* out, const int32_t* qweight, const void* scales,
                          const int32_t* zeros, int64_t k, int64_t n, int64_t group,
                          DType dtype, void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  switch (dtype) {
    case DType::kFloat32: return dequantize_typed<float>(out, qweight, scales, zeros, k, n, group, s);
    case DType::kBFloat16:
      return dequantize_typed<vllm_bf16_t>(out, qweight, scales, zeros, k, n, group, s);
    case DType::kFloat16:
      return dequantize_typed<vllm_fp16_t>(out, qweight, scales, zeros, k, n, group, s);
  }
  return -1;
}

int launch_awq_gemm(void* out, const void* input, const int32_t* qweight, const void* scales,
                    const int32_t* zeros, int64_t m, int64_t n, int64_t k, int64_t group,
                    DType dtype, void* stream) {
  if (m == 0 || n == 0) return 0;
  auto s = static_cast<vllm_stream_t>(stream);
  switch (dtype) {
    case DType::kFloat32:
      return gemm_typed<float>(out, input, qweight, scales, zeros, m, n, k, group, s);
    case DType::kBFloat16:
      return gemm_typed<vllm_bf16_t>(out, input, qweight, scales, zeros, m, n, k, group, s);
    case DType::kFloat16:
      return gemm_typed<vllm_fp16_t>(out, input, qweight, scales, zeros, m, n, k, group, s);
  }
  return -1;
}

}  // namespace vllm::gpu
