// What every CUDA binding file needs around a torch-free launcher: the
// current stream, and a launch error turned into a torch error naming the op.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/util/Exception.h>

#include "../layernorm/layernorm_launch.h"  // gpu::error_string

namespace vllm::cuda_ops {

inline void check_launch(int code, const char* op) {
  TORCH_CHECK(code == 0, op, ": kernel launch failed: ", gpu::error_string(code));
}

inline void* current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }

}  // namespace vllm::cuda_ops
