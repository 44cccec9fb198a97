// The one schema registry of the _C extension: each op is declared here once
// (vLLM's names and argument order); devices register implementations under
// the same names in their own binding files.
#include <torch/library.h>

TORCH_LIBRARY(_C, ops) {
  // out = input / sqrt(mean(input^2) + epsilon) * weight, over the last dim.
  ops.def("rms_norm(Tensor! result, Tensor input, Tensor weight, float epsilon) -> ()");
  // residual += input; input = rms_norm(residual) * weight (both in place).
  ops.def(
      "fused_add_rms_norm(Tensor! input, Tensor! residual, Tensor weight, "
      "float epsilon) -> ()");
}
