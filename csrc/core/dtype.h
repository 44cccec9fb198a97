// Element types the kernels handle, shared by CPU and GPU launchers (torch-free).
#pragma once

namespace vllm {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

}  // namespace vllm
