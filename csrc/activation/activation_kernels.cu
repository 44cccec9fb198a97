// SiLU/GELU family, gated and plain: one block per row, fp32 math, the
// activation rounded to the element type before the gate multiply (as the
// reference does).
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

template <typename T, Activation kKind, bool kGated>
__global__ void activation_kernel(T* __restrict__ out, const T* __restrict__ input,
                                  int64_t width, int64_t in_stride, int64_t out_stride) {
  const T* x = input + blockIdx.x * in_stride;
  T* y = out + blockIdx.x * out_stride;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    const T act = from_float<T>(apply<kKind>(to_float(x[i])));
    y[i] = kGated ? from_float<T>(to_float(act) * to_float(x[width + i])) : act;
  }
}

template <typename T, Activation kKind>
void launch_kind(T* out, const T* in, int64_t rows, int64_t width, int64_t in_stride,
                 int64_t out_stride, bool gated, vllm_stream_t stream) {
  const dim3 grid{static_cast<unsigned>(rows)};
  const int threads = width < 1024 ? int((width + 31) / 32 * 32) : 1024;
  if (gated) {
    activation_kernel<T, kKind, true><<<grid, threads, 0, stream>>>(out, in, width, in_stride,
                                                                     out_stride);
  } else {
    activation_kernel<T, kKind, false><<<grid, threads, 0, stream>>>(out, in, width, in_stride,
                                                                      out_stride);
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
