// KV-cache kernels: scatter tokens into slots, copy blocks across layers.
// Pure data movement in 2-byte units (every supported dtype is a multiple).
#include "../cuda_compat.h"
#include "cache_launch.h"

namespace vllm::gpu {
namespace {

using Unit = uint16_t;

__global__ void reshape_and_cache_kernel(const Unit* __restrict__ key,
                                         const Unit* __restrict__ value,
                                         Unit* __restrict__ key_cache,
                                         Unit* __restrict__ value_cache,
                                         const int64_t* __restrict__ slot_mapping,
                                         int64_t num_kv_heads, int64_t row, int64_t block_size,
                                         int64_t key_stride, int64_t value_stride) {
  const int64_t token = blockIdx.x;
  const int64_t slot = slot_mapping[token];
  if (slot < 0) return;  // padding
  const int64_t block = slot / block_size, offset = slot % block_size;
  for (int64_t i = threadIdx.x; i < num_kv_heads * row; i += blockDim.x) {
    const int64_t h = i / row, j = i % row;
    const int64_t dst = ((block * num_kv_heads + h) * block_size + offset) * row + j;
    key_cache[dst] = key[token * key_stride + i];
    value_cache[dst] = value[token * value_stride + i];
  }
}

__global__ void copy_blocks_kernel(const int64_t* __restrict__ cache_ptrs,
                                   const int64_t* __restrict__ pairs, int64_t block_units) {
  Unit* cache = reinterpret_cast<Unit*>(cache_ptrs[blockIdx.x]);
  const int64_t src = pairs[2 * blockIdx.y] * block_units;
  const int64_t dst = pairs[2 * blockIdx.y + 1] * block_units;
  for (int64_t i = threadIdx.x; i < block_units; i += blockDim.x) cache[dst + i] = cache[src + i];
}

}  // namespace

int launch_reshape_and_cache(const void* key, const void* value, void* key_cache,
                             void* value_cache, const int64_t* slot_mapping, int64_t num_tokens,
                             int64_t num_kv_heads, int64_t head_size, int64_t block_size,
                             int64_t key_stride, int64_t value_stride, int64_t element_size,
                             void* stream) {
  const int64_t units = element_size / int64_t(sizeof(Unit));  // per element
  const int64_t work = num_kv_heads * head_size * units;
  const int threads = work < 512 ? int((work + 31) / 32 * 32) : 512;
  reshape_and_cache_kernel<<<dim3{static_cast<unsigned>(num_tokens)}, threads, 0,
                             static_cast<vllm_stream_t>(stream)>>>(
      static_cast<const Unit*>(key), static_cast<const Unit*>(value),
      static_cast<Unit*>(key_cache), static_cast<Unit*>(value_cache), slot_mapping,
      num_kv_heads, head_size * units, block_size, key_stride * units, value_stride * units);
  return int(VLLM_LAUNCH_ERROR());
}

int launch_copy_blocks(const int64_t* cache_ptrs, int64_t num_caches, const int64_t* pairs,
                       int64_t num_pairs, int64_t block_bytes, void* stream) {
  const dim3 grid{static_cast<unsigned>(num_caches), static_cast<unsigned>(num_pairs)};
  copy_blocks_kernel<<<grid, 512, 0, static_cast<vllm_stream_t>(stream)>>>(
      cache_ptrs, pairs, block_bytes / int64_t(sizeof(Unit)));
  return int(VLLM_LAUNCH_ERROR());
}

}  // namespace vllm::gpu
