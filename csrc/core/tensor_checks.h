// Argument checks shared by every device's bindings, so an op rejects the
// same bad input with the same message on CPU, CUDA and ROCm.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "dtype.h"

namespace vllm {

inline DType kernel_dtype(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    default:
      TORCH_CHECK(false, op, ": unsupported dtype ", t.scalar_type(),
                  " (float32, bfloat16 and float16 are supported)");
  }
}

// Rows of the last dim: the last dim must be dense and the leading dims must
// collapse into one stride (true for contiguous tensors and 2-D row slices).
inline int64_t row_stride(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() >= 1, op, ": ", name, " must have at least one dim");
  TORCH_CHECK(t.stride(-1) == 1 || t.size(-1) == 1, op, ": ", name,
              " must be contiguous in its last dim");
  if (t.dim() == 1) return t.size(-1);
  if (t.dim() == 2) return t.stride(0);
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " with more than 2 dims must be contiguous");
  return t.size(-1);
}

inline int64_t num_rows(const at::Tensor& t) {
  return t.size(-1) == 0 ? 0 : t.numel() / t.size(-1);
}

inline void check_same_dtype_device(const at::Tensor& t, const at::Tensor& like, const char* op,
                                    const char* name) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " dtype ",
              t.scalar_type(), " differs from ", like.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ", t.device(),
              ", not ", like.device());
}

inline void check_same(const at::Tensor& t, const at::Tensor& like, const char* op,
                       const char* name) {
  TORCH_CHECK(t.sizes() == like.sizes(), op, ": ", name, " shape ", t.sizes(),
              " differs from input shape ", like.sizes());
  check_same_dtype_device(t, like, op, name);
}

inline void check_norm_weight(const at::Tensor& weight, const at::Tensor& input,
                              const char* op) {
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == input.size(-1), op,
              ": weight must be 1-D of size ", input.size(-1), ", got ", weight.sizes());
  TORCH_CHECK(weight.is_contiguous(), op, ": weight must be contiguous");
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), op, ": weight dtype ",
              weight.scalar_type(), " differs from input dtype ", input.scalar_type());
  TORCH_CHECK(weight.device() == input.device(), op, ": weight is on ", weight.device(),
              ", input on ", input.device());
}

// Stride between tokens of a [tokens..., features...] tensor whose first
// `token_dims` dims index tokens and whose per-token part is dense.
inline int64_t token_stride(const at::Tensor& t, int64_t token_dims, const char* op,
                            const char* name) {
  TORCH_CHECK(t.dim() > token_dims, op, ": ", name, " needs dims beyond the ", token_dims,
              " token dim(s), got shape ", t.sizes());
  int64_t expected = 1;
  for (int64_t d = t.dim() - 1; d >= token_dims; --d) {
    TORCH_CHECK(t.size(d) == 1 || t.stride(d) == expected, op, ": ", name,
                " must be contiguous within a token");
    expected *= t.size(d);
  }
  if (token_dims == 1) return t.stride(0);
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " with ", token_dims,
              " token dims must be contiguous");
  return expected;
}

// out[..., d] from input[..., 2d] (gated) or input[..., d]; returns d.
inline int64_t check_activation(const at::Tensor& out, const at::Tensor& input, bool gated,
                                const char* op) {
  TORCH_CHECK(input.dim() >= 1 && out.dim() == input.dim(), op,
              ": out and input must have the same number of dims");
  const int64_t width = gated ? input.size(-1) / 2 : input.size(-1);
  TORCH_CHECK(!gated || input.size(-1) % 2 == 0, op, ": input's last dim (",
              input.size(-1), ") must be even: gate and up halves");
  for (int64_t d = 0; d + 1 < input.dim(); ++d) {
    TORCH_CHECK(out.size(d) == input.size(d), op, ": out shape ", out.sizes(),
                " does not match input shape ", input.sizes());
  }
  TORCH_CHECK(out.size(-1) == width, op, ": out's last dim must be ", width, ", got ",
              out.size(-1));
  TORCH_CHECK(out.scalar_type() == input.scalar_type(), op, ": out dtype ",
              out.scalar_type(), " differs from input dtype ", input.scalar_type());
  TORCH_CHECK(out.device() == input.device(), op, ": out is on ", out.device(),
              ", input on ", input.device());
  return width;
}

}  // namespace vllm
