// Host launchers of the MLA kernels (plain C++ types, torch-free).
#pragma once

#include <cstdint>

#include "../core/mla_args.h"

namespace vllm::gpu {

// Absorbed MLA attention, decode or prefill (csrc/core/mla_args.h). Returns
// 0 or the runtime's error code.
int launch_mla_attention(const MlaAttentionArgs& a, void* stream);

// Each token's latent (lora elements, rows c_stride apart) then its rotated
// key part (rope elements, rows pe_stride apart) into its slot of the cache
// [num_blocks * block_size, lora + rope]; negative slots are skipped.
int launch_concat_and_cache_mla(const void* kv_c, const void* k_pe, void* kv_cache,
                                const int64_t* slot_mapping, int64_t num_tokens, int64_t lora,
                                int64_t rope, int64_t c_stride, int64_t pe_stride,
                                int64_t element_size, void* stream);

}  // namespace vllm::gpu
