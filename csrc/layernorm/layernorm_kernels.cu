// RMSNorm and fused residual-add + RMSNorm: one block per row, fp32
// statistics, 16-byte vectorised loads when the row allows them. Same
// numerics as the CPU kernels and vLLM's reference.
#include "../cuda_compat.h"
#include "layernorm_launch.h"

namespace vllm::gpu {
namespace {

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Elements per 16-byte load.
template <typename T>
constexpr int kVec = 16 / sizeof(T);

template <typename T, bool kVectorised>
__global__ void rms_norm_kernel(T* __restrict__ out, const T* __restrict__ input,
                                const T* __restrict__ weight, int64_t hidden,
                                int64_t in_stride, int64_t out_stride, float eps) {
  constexpr int V = kVectorised ? kVec<T> : 1;
  using P = Pack<T, V>;
  const T* x = input + blockIdx.x * in_stride;
  T* y = out + blockIdx.x * out_stride;
  const int64_t packs = hidden / V;
  const P* xp = reinterpret_cast<const P*>(x);
  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    P p = xp[i];
#pragma unroll
    for (int j = 0; j < V; ++j) { float f = to_float(p.v[j]); sum += f * f; }
  }
  const float scale = rsqrtf(block_sum(sum) / float(hidden) + eps);
  const P* wp = reinterpret_cast<const P*>(weight);
  P* yp = reinterpret_cast<P*>(y);
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    P p = xp[i], w = wp[i], r;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      T normed = from_float<T>(to_float(p.v[j]) * scale);
      r.v[j] = from_float<T>(to_float(normed) * to_float(w.v[j]));
    }
    yp[i] = r;
  }
}

template <typename T, bool kVectorised>
__global__ void fused_add_rms_norm_kernel(T* __restrict__ input, T* __restrict__ residual,
                                          const T* __restrict__ weight, int64_t hidden,
                                          int64_t in_stride, int64_t res_stride, float eps) {
  constexpr int V = kVectorised ? kVec<T> : 1;
  using P = Pack<T, V>;
  P* xp = reinterpret_cast<P*>(input + blockIdx.x * in_stride);
  P* zp = reinterpret_cast<P*>(residual + blockIdx.x * res_stride);
  const int64_t packs = hidden / V;
  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    P a = xp[i], b = zp[i], z;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      z.v[j] = from_float<T>(to_float(a.v[j]) + to_float(b.v[j]));
      const float f = to_float(z.v[j]);
      sum += f * f;
    }
    zp[i] = z;
  }
  const float scale = rsqrtf(block_sum(sum) / float(hidden) + eps);
  const P* wp = reinterpret_cast<const P*>(weight);
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    P z = zp[i], w = wp[i], r;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      T normed = from_float<T>(to_float(z.v[j]) * scale);
      r.v[j] = from_float<T>(to_float(normed) * to_float(w.v[j]));
    }
    xp[i] = r;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

int block_size_for(int64_t work) {
  const int64_t warps = (work + kVllmWarpSize - 1) / kVllmWarpSize;
  const int64_t threads = warps * kVllmWarpSize;
  return int(threads < 1024 ? threads : 1024);
}

template <typename T>
int rms_norm_typed(void* out, const void* input, const void* weight, int64_t rows,
                   int64_t hidden, int64_t in_stride, int64_t out_stride, float eps,
                   vllm_stream_t stream) {
  const bool vec = hidden % kVec<T> == 0 && in_stride % kVec<T> == 0 &&
                   out_stride % kVec<T> == 0 && aligned16(out) && aligned16(input) &&
                   aligned16(weight);
  const dim3 grid{static_cast<unsigned>(rows)};
  if (vec) {
    rms_norm_kernel<T, true><<<grid, block_size_for(hidden / kVec<T>), 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(input), static_cast<const T*>(weight),
        hidden, in_stride, out_stride, eps);
  } else {
    rms_norm_kernel<T, false><<<grid, block_size_for(hidden), 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(input), static_cast<const T*>(weight),
        hidden, in_stride, out_stride, eps);
  }
  return int(VLLM_LAUNCH_ERROR());
}

template <typename T>
int fused_add_typed(void* input, void* residual, const void* weight, int64_t rows,
                    int64_t hidden, int64_t in_stride, int64_t res_stride, float eps,
                    vllm_stream_t stream) {
  const bool vec = hidden % kVec<T> == 0 && in_stride % kVec<T> == 0 &&
                   res_stride % kVec<T> == 0 && aligned16(input) && aligned16(residual) &&
                   aligned16(weight);
  const dim3 grid{static_cast<unsigned>(rows)};
  if (vec) {
    fused_add_rms_norm_kernel<T, true><<<grid, block_size_for(hidden / kVec<T>), 0, stream>>>(
        static_cast<T*>(input), static_cast<T*>(residual), static_cast<const T*>(weight),
        hidden, in_stride, res_stride, eps);
  } else {
    fused_add_rms_norm_kernel<T, false><<<grid, block_size_for(hidden), 0, stream>>>(
        static_cast<T*>(input), static_cast<T*>(residual), static_cast<const T*>(weight),
        hidden, in_stride, res_stride, eps);
  }
  return int(VLLM_LAUNCH_ERROR());
}

}  // namespace

int launch_rms_norm(void* out, const void* input, const void* weight, int64_t rows,
                    int64_t hidden, int64_t in_stride, int64_t out_stride, float eps,
                    DType dtype, void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  switch (dtype) {
    case DType::kFloat32:
      return rms_norm_typed<float>(out, input, weight, rows, hidden, in_stride, out_stride, eps, s);
    case DType::kBFloat16:
      return rms_norm_typed<vllm_bf16_t>(out, input, weight, rows, hidden, in_stride,
                                         out_stride, eps, s);
    case DType::kFloat16:
      return rms_norm_typed<vllm_fp16_t>(out, input, weight, rows, hidden, in_stride,
                                         out_stride, eps, s);
  }
  return -1;
}

int launch_fused_add_rms_norm(void* input, void* residual, const void* weight, int64_t rows,
                              int64_t hidden, int64_t in_stride, int64_t res_stride, float eps,
                              DType dtype, void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  switch (dtype) {
    case DType::kFloat32:
      return fused_add_typed<float>(input, residual, weight, rows, hidden, in_stride,
                                    res_stride, eps, s);
    case DType::kBFloat16:
      return fused_add_typed<vllm_bf16_t>(input, residual, weight, rows, hidden, in_stride,
                                          res_stride, eps, s);
    case DType::kFloat16:
      return fused_add_typed<vllm_fp16_t>(input, residual, weight, rows, hidden, in_stride,
                                          res_stride, eps, s);
  }
  return -1;
}

const char* error_string(int code) {
#ifdef USE_ROCM
  return hipGetErrorString(static_cast<hipError_t>(code));
#else
  return cudaGetErrorString(static_cast<cudaError_t>(code));
#endif
}

}  // namespace vllm::gpu
