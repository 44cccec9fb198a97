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

// out = T(T(x * scale) * w), as the reference rounds; this thread's packs.
template <typename T, int V>
__device__ __forceinline__ void scale_and_store(Pack<T, V>* out, const Pack<T, V>* x,
                                                const Pack<T, V>* w, int64_t packs,
                                                float scale) {
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    Pack<T, V> p = x[i], g = w[i], r;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const T normed = from_float<T>(to_float(p.v[j]) * scale);
      r.v[j] = from_float<T>(to_float(normed) * to_float(g.v[j]));
    }
    out[i] = r;
  }
}

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
  scale_and_store(reinterpret_cast<P*>(y), xp, reinterpret_cast<const P*>(weight), packs, scale);
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
  scale_and_store(xp, zp, reinterpret_cast<const P*>(weight), packs, scale);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

int block_size_for(int64_t work) {
  const int64_t warps = (work + kVllmWarpSize - 1) / kVllmWarpSize;
  const int64_t threads = warps * kVllmWarpSize;
  return int(threads < 1024 ? threads : 1024);
}

// 16-byte packs need the row length, both row strides and every pointer to
// be multiples of the pack.
template <typename T>
bool can_vectorise(int64_t hidden, int64_t stride_a, int64_t stride_b, const void* p,
                   const void* q, const void* r) {
  return hidden % kVec<T> == 0 && stride_a % kVec<T> == 0 && stride_b % kVec<T> == 0 &&
         aligned16(p) && aligned16(q) && aligned16(r);
}

// Launch `vectorised` on 16-byte packs when allowed, else `scalar`: the same
// kernel instantiated for packs of kVec<T> and of 1 element.
template <typename T, typename Kernel, typename... Args>
int launch(Kernel vectorised, Kernel scalar, bool use_vectorised, int64_t rows, int64_t hidden,
           vllm_stream_t stream, Args... args) {
  const dim3 grid{static_cast<unsigned>(rows)};
  if (use_vectorised) {
    vectorised<<<grid, block_size_for(hidden / kVec<T>), 0, stream>>>(args...);
  } else {
    scalar<<<grid, block_size_for(hidden), 0, stream>>>(args...);
  }
  return int(VLLM_LAUNCH_ERROR());
}

template <typename T>
int rms_norm_typed(void* out, const void* input, const void* weight, int64_t rows,
                   int64_t hidden, int64_t in_stride, int64_t out_stride, float eps,
                   vllm_stream_t stream) {
  return launch<T>(&rms_norm_kernel<T, true>, &rms_norm_kernel<T, false>,
                   can_vectorise<T>(hidden, in_stride, out_stride, out, input, weight), rows,
                   hidden, stream, static_cast<T*>(out), static_cast<const T*>(input),
                   static_cast<const T*>(weight), hidden, in_stride, out_stride, eps);
}

template <typename T>
int fused_add_typed(void* input, void* residual, const void* weight, int64_t rows,
                    int64_t hidden, int64_t in_stride, int64_t res_stride, float eps,
                    vllm_stream_t stream) {
  return launch<T>(&fused_add_rms_norm_kernel<T, true>, &fused_add_rms_norm_kernel<T, false>,
                   can_vectorise<T>(hidden, in_stride, res_stride, input, residual, weight),
                   rows, hidden, stream, static_cast<T*>(input), static_cast<T*>(residual),
                   static_cast<const T*>(weight), hidden, in_stride, res_stride, eps);
}

// Instantiate `fn` for the runtime dtype.
template <template <typename> class Fn, typename... Args>
int by_dtype(DType dtype, Args... args) {
  switch (dtype) {
    case DType::kFloat32: return Fn<float>::call(args...);
    case DType::kBFloat16: return Fn<vllm_bf16_t>::call(args...);
    case DType::kFloat16: return Fn<vllm_fp16_t>::call(args...);
  }
  return -1;
}

template <typename T>
struct RmsNorm {
  template <typename... Args>
  static int call(Args... args) { return rms_norm_typed<T>(args...); }
};
template <typename T>
struct FusedAddRmsNorm {
  template <typename... Args>
  static int call(Args... args) { return fused_add_typed<T>(args...); }
};

}  // namespace

int launch_rms_norm(void* out, const void* input, const void* weight, int64_t rows,
                    int64_t hidden, int64_t in_stride, int64_t out_stride, float eps,
                    DType dtype, void* stream) {
  return by_dtype<RmsNorm>(dtype, out, input, weight, rows, hidden, in_stride, out_stride, eps,
                           static_cast<vllm_stream_t>(stream));
}

int launch_fused_add_rms_norm(void* input, void* residual, const void* weight, int64_t rows,
                              int64_t hidden, int64_t in_stride, int64_t res_stride, float eps,
                              DType dtype, void* stream) {
  return by_dtype<FusedAddRmsNorm>(dtype, input, residual, weight, rows, hidden, in_stride,
                                   res_stride, eps, static_cast<vllm_stream_t>(stream));
}

const char* error_string(int code) {
#ifdef USE_ROCM
  return hipGetErrorString(static_cast<hipError_t>(code));
#else
  return cudaGetErrorString(static_cast<cudaError_t>(code));
#endif
}

}  // namespace vllm::gpu
