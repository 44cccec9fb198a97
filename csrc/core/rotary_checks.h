// Shape checks of rotary_embedding, shared by the CPU and GPU bindings.
#pragma once

#include <optional>

#include "tensor_checks.h"

namespace vllm {

struct RotaryShape {
  int64_t num_tokens, num_heads, num_kv_heads, rot_dim, query_stride, key_stride;
};

inline RotaryShape check_rotary(const at::Tensor& positions, const at::Tensor& query,
                                const std::optional<at::Tensor>& key, int64_t head_size,
                                const at::Tensor& cos_sin_cache) {
  constexpr const char* op = "rotary_embedding";
  TORCH_CHECK(positions.scalar_type() == at::kLong, op, ": positions must be int64");
  TORCH_CHECK(positions.is_contiguous(), op, ": positions must be contiguous");
  RotaryShape s{};
  s.num_tokens = positions.numel();
  const int64_t token_dims = positions.dim();
  TORCH_CHECK(head_size > 0, op, ": head_size must be positive");
  TORCH_CHECK(s.num_tokens == 0 || query.numel() % (s.num_tokens * head_size) == 0, op,
              ": query of shape ", query.sizes(), " is not tokens x heads x ", head_size);
  s.num_heads = s.num_tokens == 0 ? 0 : query.numel() / (s.num_tokens * head_size);
  s.query_stride = token_stride(query, token_dims, op, "query");
  kernel_dtype(query, op);
  TORCH_CHECK(cos_sin_cache.dim() == 2 && cos_sin_cache.is_contiguous(), op,
              ": cos_sin_cache must be a contiguous [max_position, rot_dim] tensor");
  TORCH_CHECK(cos_sin_cache.scalar_type() == query.scalar_type(), op,
              ": cos_sin_cache dtype ", cos_sin_cache.scalar_type(), " differs from query dtype ",
              query.scalar_type());
  s.rot_dim = cos_sin_cache.size(1);
  TORCH_CHECK(s.rot_dim % 2 == 0 && s.rot_dim <= head_size, op, ": rot_dim ", s.rot_dim,
              " must be even and at most head_size ", head_size);
  if (key.has_value()) {
    check_same_dtype_device(*key, query, op, "key");
    TORCH_CHECK(s.num_tokens == 0 || key->numel() % (s.num_tokens * head_size) == 0, op,
                ": key of shape ", key->sizes(), " is not tokens x heads x ", head_size);
    s.num_kv_heads = s.num_tokens == 0 ? 0 : key->numel() / (s.num_tokens * head_size);
    s.key_stride = token_stride(*key, token_dims, op, "key");
  }
  TORCH_CHECK(positions.device() == query.device() && cos_sin_cache.device() == query.device(),
              op, ": positions, query and cos_sin_cache must be on one device");
  return s;
}

}  // namespace vllm
