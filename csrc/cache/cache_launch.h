// Host launchers of the KV-cache kernels (plain C++ types, torch-free).
// Layout: key [num_blocks, num_kv_heads, head_size, block_size], value
// [num_blocks, num_kv_heads, block_size, head_size].
#pragma once

#include <cstdint>

namespace vllm::gpu {

// Copies each token's rows into its slot; negative slots are skipped.
// Strides and sizes in elements of `element_size` bytes.
int launch_reshape_and_cache(const void* key, const void* value, void* key_cache,
                             void* value_cache, const int64_t* slot_mapping,
                             int64_t num_tokens, int64_t num_kv_heads, int64_t head_size,
                             int64_t block_size, int64_t key_stride, int64_t value_stride,
                             int64_t element_size, void* stream);

// For each cache pointer (device array of `num_caches` base addresses) and each
// (src, dst) pair (device array of 2 * num_pairs int64), copies one block.
int launch_copy_blocks(const int64_t* cache_ptrs, int64_t num_caches,
                       const int64_t* block_pairs, int64_t num_pairs, int64_t block_bytes,
                       void* stream);

}  // namespace vllm::gpu
