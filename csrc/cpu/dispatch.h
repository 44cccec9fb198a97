// Runtime dtype -> kernel template instantiation, shared by the CPU kernels.
#pragma once

#include "kernel_table.h"
#include "vec.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

// Calls Fn<float|bf16_t|fp16_t>::run(args) for args.dtype.
template <template <typename> class Fn, typename Args>
void by_dtype(const Args& args) {
  switch (args.dtype) {
    case DType::kFloat32: Fn<float>::run(args); break;
    case DType::kBFloat16: Fn<bf16_t>::run(args); break;
    case DType::kFloat16: Fn<fp16_t>::run(args); break;
  }
}

// Below this many elements an OpenMP fork/join (microseconds, tens of them
// with OMP_WAIT_POLICY=PASSIVE) costs more than the loop it would split.
constexpr int64_t kParallelMinElements = 1 << 15;

}  // namespace
}  // namespace vllm::cpu::VLLM_ISA_NS
