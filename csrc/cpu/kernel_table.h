// The CPU kernels of one ISA variant, as a table of plain function pointers.
//
// Torch-free on purpose: the per-ISA kernel objects are compiled with
// -mavx512*/-mavx2 and must not share inline code with the bindings, which
// are compiled for the baseline ISA and pick a table at run time.
#pragma once

#include <cstdint>

#include "../core/dtype.h"

namespace vllm::cpu {

using vllm::DType;

// Rows of `hidden` elements; strides are in elements between rows.
struct RmsNormArgs {
  void* out;
  const void* input;
  const void* weight;
  int64_t num_rows;
  int64_t hidden;
  int64_t input_row_stride;
  int64_t out_row_stride;
  float epsilon;
  DType dtype;
};

// In place: residual += input; input = rms_norm(residual) * weight.
struct FusedAddRmsNormArgs {
  void* input;
  void* residual;
  const void* weight;
  int64_t num_rows;
  int64_t hidden;
  int64_t input_row_stride;
  int64_t residual_row_stride;
  float epsilon;
  DType dtype;
};

struct KernelTable {
  const char* isa;
  void (*rms_norm)(const RmsNormArgs&);
  void (*fused_add_rms_norm)(const FusedAddRmsNormArgs&);
};

// One per compiled variant; defined in kernel_table.cpp built per ISA.
namespace avx512 { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
namespace scalar { const KernelTable& kernel_table(); }

// Chosen at load time from the running CPU; changeable by set_active_isa.
const KernelTable& active_kernels();
// Returns false (and changes nothing) when `isa` is not built or not
// supported by this CPU; "auto" selects the best supported variant.
bool set_active_isa(const char* isa);
// Comma-separated variants this CPU can run, best first.
const char* supported_isas();
// Comma-separated variants compiled into this library.
const char* built_isas();

}  // namespace vllm::cpu
