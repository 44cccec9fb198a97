// KV-cache kernels: scatter tokens into slots, copy blocks across layers.
// Pure data movement (copy_blocks in 2-byte units: every dtype is a multiple).
#include "../cuda_compat.h"
#include "cache_launch.h"

namespace vllm::gpu {
namespace {

// E: a same-size integer stand-in for the element type (this only moves
// bits). Keys go in transposed: the block's key is [head_size, block_size].
template <typename E>
__global__ void reshape_and_cache_kernel(const E* __restrict__ key, const E* __restrict__ value,
                                         E* __restrict__ key_cache, E* __restrict__ value_cache,
                                         const int64_t* __restrict__ slot_mapping,
                                         int64_t num_kv_heads, int64_t head_size,
                                         int64_t block_size, int64_t key_stride,
                                         int64_t value_stride) {
  const int64_t token = blockIdx.x;
  const int64_t slot = slot_mapping[token];
  if (slot < 0) return;  // padding
  const int64_t block = slot / block_size, offset = slot % block_size;
  for (int64_t i = threadIdx.x; i < num_kv_heads * head_size; i += blockDim.x) {
    const int64_t h = i / head_size, d = i % head_size;
    const int64_t base = (block * num_kv_heads + h) * head_size * block_size;
    key_cache[base + d * block_size + offset] = key[token * key_stride + i];
    value_cache[base + offset * head_size + d] = value[token * value_stride + i];
  }
}

__global__ void copy_blocks_kernel(const int64_t* __restrict__ cache_ptrs,
                                   const int64_t* __restrict__ pairs, int64_t block_units) {
  uint16_t* cache = reinterpret_cast<uint16_t*>(cache_ptrs[blockIdx.x]);
  const int64_t src = pairs[2 * blockIdx.y] * block_units;
  const int64_t dst = pairs[2 * blockIdx.y + 1] * block_units;
  for (int64_t i = threadIdx.x; i < block_units; i += blockDim.x) cache[dst + i] = cache[src + i];
}

template <typename E>
void launch_scatter(const void* key, const void* value, void* key_cache, void* value_cache,
                    const int64_t* slot_mapping, int64_t num_tokens, int64_t num_kv_heads,
                    int64_t head_size, int64_t block_size, int64_t key_stride,
                    int64_t value_stride, vllm_stream_t stream) {
  const int64_t work = num_kv_heads * head_size;
  const int threads = work < 512 ? int((work + 31) / 32 * 32) : 512;
  reshape_and_cache_kernel<E><<<dim3{static_cast<unsigned>(num_tokens)}, threads, 0, stream>>>(
      static_cast<const E*>(key), static_cast<const E*>(value), static_cast<E*>(key_cache),
      static_cast<E*>(value_cache), slot_mapping, num_kv_heads, head_size, block_size,
      key_stride, value_stride);
}

}  // namespace

int launch_reshape_and_cache(const void* key, const void* value, void* key_cache,
                             void* value_cache, const int64_t* slot_mapping, int64_t num_tokens,
                             int64_t num_kv_heads, int64_t head_size, int64_t block_size,
                             int64_t key_stride, int64_t value_stride, int64_t element_size,
                             void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  if (element_size == 2) {
    launch_scatter<uint16_t>(key, value, key_cache, value_cache, slot_mapping, num_tokens,
                             num_kv_heads, head_size, block_size, key_stride, value_stride, s);
  } else if (element_size == 4) {
    launch_scatter<uint32_t>(key, value, key_cache, value_cache, slot_mapping, num_tokens,
                             num_kv_heads, head_size, block_size, key_stride, value_stride, s);
  } else {
    return -1;
  }
  return int(VLLM_LAUNCH_ERROR());
}

int launch_copy_blocks(const int64_t* cache_ptrs, int64_t num_caches, const int64_t* pairs,
                       int64_t num_pairs, int64_t block_bytes, void* stream) {
  const dim3 grid{static_cast<unsigned>(num_caches), static_cast<unsigned>(num_pairs)};
  copy_blocks_kernel<<<grid, 512, 0, static_cast<vllm_stream_t>(stream)>>>(
      cache_ptrs, pairs, block_bytes / int64_t(sizeof(uint16_t)));
  return int(VLLM_LAUNCH_ERROR());
}

}  // namespace vllm::gpu
