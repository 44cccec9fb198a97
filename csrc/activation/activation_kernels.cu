// SiLU/GELU family, gated and plain: one block per row, fp32 math, the
// activation rounded to the element type before the gate multiply (as the
// reference does). 16-byte loads and stores where the shapes allow.
#include "../cuda_compat.h"
#include "activation_launch.h"

namespace vllm::gpu {
namespace {

template <Activation kKind>
__device__ __forceinline__ float apply(float x) {
  if constexpr (kKind == Activation::kSilu) {
    return x / (1.0f + expf(-x));
  } else if constexpr (kKind == Activation::kGelu) {
    // 0.5 x erfc(-x / sqrt 2): exact GELU without cancellation for x < 0
    return 0.5f * x * erfcf(-x * 0.70710678118654752f);
  } else if constexpr (kKind == Activation::kGeluQuick) {
    return x / (1.0f + expf(-1.702f * x));
  } else {
    // tanh approximation: 0.5 x (1 + tanh(y)) = x / (1 + e^(-2y))
    const float y = 0.79788456080286536f * x * (1.0f + 0.044715f * x * x);
    return x / (1.0f + expf(-2.0f * y));
  }
}

// kN consecutive elements, moved as one access (16 bytes when kN > 1).
template <typename T, int kN>
struct alignas(sizeof(T) * kN) Pack {
  T v[kN];
};

// kN elements per thread step: 16-byte accesses where the row width,
// strides and pointers allow (see launch_kind), single elements otherwise.
template <typename T, Activation kKind, bool kGated, int kN>
__global__ void activation_kernel(T* __restrict__ out, const T* __restrict__ input,
                                  int64_t width, int64_t in_stride, int64_t out_stride) {
  using P = Pack<T, kN>;
  const T* x = input + blockIdx.x * in_stride;
  T* y = out + blockIdx.x * out_stride;
  for (int64_t i = threadIdx.x * int64_t(kN); i < width; i += int64_t(blockDim.x) * kN) {
    const P a = *reinterpret_cast<const P*>(x + i);
    P r;
    if constexpr (kGated) {
      const P g = *reinterpret_cast<const P*>(x + width + i);
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        const T act = from_float<T>(apply<kKind>(to_float(a.v[j])));
        r.v[j] = from_float<T>(to_float(act) * to_float(g.v[j]));
      }
    } else {
#pragma unroll
      for (int j = 0; j < kN; ++j) r.v[j] = from_float<T>(apply<kKind>(to_float(a.v[j])));
    }
    *reinterpret_cast<P*>(y + i) = r;
  }
}

template <typename T, Activation kKind, int kN>
void launch_packed(T* out, const T* in, int64_t rows, int64_t width, int64_t in_stride,
                   int64_t out_stride, bool gated, vllm_stream_t stream) {
  const dim3 grid{static_cast<unsigned>(rows)};
  const int64_t steps = (width + kN - 1) / kN;
  const int threads = steps < 1024 ? int((steps + 31) / 32 * 32) : 1024;
  if (gated) {
    activation_kernel<T, kKind, true, kN><<<grid, threads, 0, stream>>>(out, in, width, in_stride,
                                                                        out_stride);
  } else {
    activation_kernel<T, kKind, false, kN><<<grid, threads, 0, stream>>>(out, in, width,
                                                                         in_stride, out_stride);
  }
}

template <typename T, Activation kKind>
void launch_kind(T* out, const T* in, int64_t rows, int64_t width, int64_t in_stride,
                 int64_t out_stride, bool gated, vllm_stream_t stream) {
  constexpr int kN = 16 / sizeof(T);
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  if (width % kN == 0 && in_stride % kN == 0 && out_stride % kN == 0 && aligned(out) &&
      aligned(in)) {
    launch_packed<T, kKind, kN>(out, in, rows, width, in_stride, out_stride, gated, stream);
  } else {
    launch_packed<T, kKind, 1>(out, in, rows, width, in_stride, out_stride, gated, stream);
  }
}

template <typename T>
int launch_typed(void* out, const void* input, int64_t rows, int64_t width, int64_t in_stride,
                 int64_t out_stride, Activation kind, bool gated, vllm_stream_t stream) {
  T* o = static_cast<T*>(out);
  const T* x = static_cast<const T*>(input);
  switch (kind) {
    case Activation::kSilu:
      launch_kind<T, Activation::kSilu>(o, x, rows, width, in_stride, out_stride, gated, stream);
      break;
    case Activation::kGelu:
      launch_kind<T, Activation::kGelu>(o, x, rows, width, in_stride, out_stride, gated, stream);
      break;
    case Activation::kGeluTanh:
      launch_kind<T, Activation::kGeluTanh>(o, x, rows, width, in_stride, out_stride, gated,
                                            stream);
      break;
    case Activation::kGeluQuick:
      launch_kind<T, Activation::kGeluQuick>(o, x, rows, width, in_stride, out_stride, gated,
                                             stream);
      break;
  }
  return int(VLLM_LAUNCH_ERROR());
}

}  // namespace

int launch_activation(void* out, const void* input, int64_t rows, int64_t width,
                      int64_t in_stride, int64_t out_stride, Activation kind, bool gated,
                      DType dtype, void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  switch (dtype) {
    case DType::kFloat32:
      return launch_typed<float>(out, input, rows, width, in_stride, out_stride, kind, gated, s);
    case DType::kBFloat16:
      return launch_typed<vllm_bf16_t>(out, input, rows, width, in_stride, out_stride, kind,
                                       gated, s);
    case DType::kFloat16:
      return launch_typed<vllm_fp16_t>(out, input, rows, width, in_stride, out_stride, kind,
                                       gated, s);
  }
  return -1;
}

}  // namespace vllm::gpu
