// Host launchers of the MoE routing kernels (plain C++ types, torch-free).
#pragma once

#include <cstdint>

#include "../core/dtype.h"

namespace vllm::gpu {

// topk_softmax: gating [m, e] (row stride), weights/ids/token_expert [m, k];
// ids int32 (`ids64` false) or int64. Returns 0 or the runtime's error code.
int launch_topk_softmax(float* weights, void* ids, bool ids64, int32_t* token_expert,
                        const void* gating, int64_t m, int64_t e, int64_t k,
                        int64_t gating_row_stride, DType dtype, void* stream);

// moe_align_block_size over `numel` ids (int32 or int64); ids outside
// [0, num_experts) are left out (not routed).
int launch_moe_align_block_size(const void* ids, bool ids64, int64_t numel, int64_t num_experts,
                                int64_t block_size, int32_t* sorted, int64_t sorted_len,
                                int32_t* experts_ids, int64_t blocks_len, int32_t* post_pad,
                                void* stream);

// moe_sum: input [m, k, h] -> output [m, h], contiguous.
int launch_moe_sum(void* output, const void* input, int64_t m, int64_t k, int64_t h, DType dtype,
                   void* stream);

}  // namespace vllm::gpu
