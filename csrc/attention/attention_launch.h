// Host launcher of the paged attention kernels (plain C++ types, torch-free).
#pragma once

#include <cstdint>

#include "../core/attention_args.h"

namespace vllm::gpu {

using vllm::PagedAttentionArgs;  // csrc/core/attention_args.h

// Returns 0 or the runtime's error code.
int launch_paged_attention(const PagedAttentionArgs& p, void* stream);

}  // namespace vllm::gpu
