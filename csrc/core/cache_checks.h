// Checks of the KV-cache ops, shared by every device's bindings.
//
// Cache layout (both devices; python/vllm/attention/kv_cache_layout.py):
// key_cache [num_blocks, num_kv_heads, head_size, block_size] (token index
// fastest), value_cache [num_blocks, num_kv_heads, block_size, head_size].
#pragma once

#include <string>
#include <vector>

#include "tensor_checks.h"

namespace vllm {

struct CacheShape {
  int64_t num_tokens, num_kv_heads, head_size, num_blocks, block_size;
  int64_t key_stride, value_stride;
};

inline void check_kv_cache_dtype(const std::string& kv_cache_dtype, const char* op) {
  TORCH_CHECK(kv_cache_dtype == "auto", op, ": kv_cache_dtype '", kv_cache_dtype,
              "' is not supported; only 'auto' (the model dtype) is");
}

// Checks a key/value cache pair and returns its geometry.
inline CacheShape check_cache_pair(const at::Tensor& key_cache, const at::Tensor& value_cache,
                                   const char* op) {
  TORCH_CHECK(key_cache.dim() == 4 && key_cache.is_contiguous(), op,
              ": key_cache must be a contiguous [num_blocks, num_kv_heads, head_size, "
              "block_size] tensor, got ", key_cache.sizes());
  CacheShape s{};
  s.num_blocks = key_cache.size(0);
  s.num_kv_heads = key_cache.size(1);
  s.head_size = key_cache.size(2);
  s.block_size = key_cache.size(3);
  TORCH_CHECK(value_cache.dim() == 4 && value_cache.is_contiguous() &&
                  value_cache.size(0) == s.num_blocks && value_cache.size(1) == s.num_kv_heads &&
                  value_cache.size(2) == s.block_size && value_cache.size(3) == s.head_size,
              op, ": value_cache must be a contiguous [num_blocks, num_kv_heads, block_size, "
              "head_size] = [", s.num_blocks, ", ", s.num_kv_heads, ", ", s.block_size, ", ",
              s.head_size, "] tensor, got ", value_cache.sizes());
  check_same_dtype_device(value_cache, key_cache, op, "value_cache");
  return s;
}

inline CacheShape check_reshape_and_cache(const at::Tensor& key, const at::Tensor& value,
                                          const at::Tensor& key_cache,
                                          const at::Tensor& value_cache,
                                          const at::Tensor& slot_mapping,
                                          const std::string& kv_cache_dtype) {
  constexpr const char* op = "reshape_and_cache";
  check_kv_cache_dtype(kv_cache_dtype, op);
  CacheShape s = check_cache_pair(key_cache, value_cache, op);
  check_same_dtype_device(key, key_cache, op, "key");
  check_same_dtype_device(value, key_cache, op, "value");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.dim() == 1, op,
              ": slot_mapping must be a 1-D int64 tensor");
  s.num_tokens = slot_mapping.size(0);
  const int64_t per_token = s.num_kv_heads * s.head_size;
  TORCH_CHECK(key.numel() == s.num_tokens * per_token, op, ": key of shape ", key.sizes(),
              " does not hold ", s.num_tokens, " tokens x ", s.num_kv_heads, " heads x ",
              s.head_size);
  TORCH_CHECK(value.numel() == key.numel(), op, ": value and key differ in size");
  s.key_stride = s.num_tokens == 0 ? per_token : token_stride(key, 1, op, "key");
  s.value_stride = s.num_tokens == 0 ? per_token : token_stride(value, 1, op, "value");
  return s;
}

// copy_blocks' caches: every layer's key cache, then every value cache.
inline std::vector<at::Tensor> all_caches(const std::vector<at::Tensor>& key_caches,
                                          const std::vector<at::Tensor>& value_caches,
                                          const char* op) {
  TORCH_CHECK(key_caches.size() == value_caches.size(), op,
              ": key_caches and value_caches must have one tensor per layer each");
  std::vector<at::Tensor> caches(key_caches);
  caches.insert(caches.end(), value_caches.begin(), value_caches.end());
  return caches;
}

// copy_blocks: every layer's caches are contiguous, of one dtype, with the
// same number of blocks and the same bytes per block. Returns bytes per block.
inline int64_t check_block_caches(const std::vector<at::Tensor>& caches, const char* op) {
  const at::Tensor& first = caches[0];
  TORCH_CHECK(first.dim() >= 2, op, ": caches must be [num_blocks, ...] tensors");
  for (const at::Tensor& c : caches) {
    TORCH_CHECK(c.is_contiguous() && c.dim() >= 2 && c.size(0) == first.size(0) &&
                    c.numel() == first.numel() && c.scalar_type() == first.scalar_type() &&
                    c.device() == first.device(),
                op, ": every cache must be contiguous, on one device, with one dtype, block "
                "count and block size");
  }
  return first.size(0) == 0 ? 0 : first.numel() / first.size(0) * first.element_size();
}

// Pairs (src, dst) of a [n, 2] int64 block mapping, as a CPU tensor.
inline at::Tensor check_block_mapping(const at::Tensor& mapping, int64_t src_blocks,
                                      int64_t dst_blocks, const char* op) {
  TORCH_CHECK(mapping.dim() == 2 && mapping.size(1) == 2 && mapping.scalar_type() == at::kLong,
              op, ": block_mapping must be an int64 [n, 2] tensor of (src, dst) pairs");
  at::Tensor pairs = mapping.to(at::kCPU).contiguous();
  const int64_t* p = pairs.data_ptr<int64_t>();
  for (int64_t i = 0; i < pairs.size(0); ++i) {
    TORCH_CHECK(p[2 * i] >= 0 && p[2 * i] < src_blocks && p[2 * i + 1] >= 0 &&
                    p[2 * i + 1] < dst_blocks,
                op, ": block pair (", p[2 * i], ", ", p[2 * i + 1], ") is out of range [0, ",
                src_blocks, ") x [0, ", dst_blocks, ")");
  }
  return pairs;
}

}  // namespace vllm
