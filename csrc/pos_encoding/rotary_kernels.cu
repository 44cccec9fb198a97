// Rotary embedding: one block per token; each thread rotates pairs across
// all query and key heads of that token. fp32 math, one rounding.
#include "../cuda_compat.h"
#include "rotary_launch.h"

namespace vllm::gpu {
namespace {

template <typename T, bool kNeox>
__global__ void rotary_kernel(const int64_t* __restrict__ positions, T* __restrict__ query,
                              T* __restrict__ key, const T* __restrict__ cos_sin_cache,
                              int64_t num_heads, int64_t num_kv_heads, int64_t head_size,
                              int64_t rot_dim, int64_t query_stride, int64_t key_stride) {
  const int64_t token = blockIdx.x;
  const int64_t half = rot_dim / 2;
  const T* cos = cos_sin_cache + positions[token] * rot_dim;
  const T* sin = cos + half;
  const int64_t heads = num_heads + (key ? num_kv_heads : 0);
  for (int64_t job = threadIdx.x; job < heads * half; job += blockDim.x) {
    const int64_t h = job / half, i = job % half;
    T* x = h < num_heads ? query + token * query_stride + h * head_size
                         : key + token * key_stride + (h - num_heads) * head_size;
    const int64_t a = kNeox ? i : 2 * i, b = kNeox ? i + half : 2 * i + 1;
    const float x1 = to_float(x[a]), x2 = to_float(x[b]);
    const float c = to_float(cos[i]), s = to_float(sin[i]);
    x[a] = from_float<T>(x1 * c - x2 * s);
    x[b] = from_float<T>(x2 * c + x1 * s);
  }
}

template <typename T>
int launch_typed(const int64_t* positions, void* query, void* key, const void* cache,
                 int64_t tokens, int64_t num_heads, int64_t num_kv_heads, int64_t head_size,
                 int64_t rot_dim, int64_t q_stride, int64_t k_stride, bool is_neox,
                 vllm_stream_t stream) {
  const int64_t work = (num_heads + (key ? num_kv_heads : 0)) * rot_dim / 2;
  const int threads = work < 512 ? int((work + 31) / 32 * 32) : 512;
  const dim3 grid{static_cast<unsigned>(tokens)};
  auto* q = static_cast<T*>(query);
  auto* k = static_cast<T*>(key);
  auto* c = static_cast<const T*>(cache);
  if (is_neox) {
    rotary_kernel<T, true><<<grid, threads, 0, stream>>>(positions, q, k, c, num_heads,
                                                         num_kv_heads, head_size, rot_dim,
                                                         q_stride, k_stride);
  } else {
    rotary_kernel<T, false><<<grid, threads, 0, stream>>>(positions, q, k, c, num_heads,
                                                          num_kv_heads, head_size, rot_dim,
                                                          q_stride, k_stride);
  }
  return int(VLLM_LAUNCH_ERROR());
}

}  // namespace

int launch_rotary_embedding(const int64_t* positions, void* query, void* key,
                            const void* cache, int64_t tokens, int64_t num_heads,
                            int64_t num_kv_heads, int64_t head_size, int64_t rot_dim,
                            int64_t q_stride, int64_t k_stride, bool is_neox, DType dtype,
                            void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  switch (dtype) {
    case DType::kFloat32:
      return launch_typed<float>(positions, query, key, cache, tokens, num_heads, num_kv_heads,
                                 head_size, rot_dim, q_stride, k_stride, is_neox, s);
    case DType::kBFloat16:
      return launch_typed<vllm_bf16_t>(positions, query, key, cache, tokens, num_heads,
                                       num_kv_heads, head_size, rot_dim, q_stride, k_stride,
                                       is_neox, s);
    case DType::kFloat16:
      return launch_typed<vllm_fp16_t>(positions, query, key, cache, tokens, num_heads,
                                       num_kv_heads, head_size, rot_dim, q_stride, k_stride,
                                       is_neox, s);
  }
  return -1;
}

}  // namespace vllm::gpu
