// Host launcher of the rotary embedding kernel (plain C++ types, torch-free).
#pragma once

#include <cstdint>

#include "../core/dtype.h"

namespace vllm::gpu {

// In place; `key` may be null. See csrc/cpu/kernel_table.h for the layout.
int launch_rotary_embedding(const int64_t* positions, void* query, void* key,
                            const void* cos_sin_cache, int64_t num_tokens, int64_t num_heads,
                            int64_t num_kv_heads, int64_t head_size, int64_t rot_dim,
                            int64_t query_stride, int64_t key_stride, bool is_neox,
                            DType dtype, void* stream);

}  // namespace vllm::gpu
