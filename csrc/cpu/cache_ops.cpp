// KV-cache ops on CPU: scatter new keys/values into their slots, copy blocks
// (copy-on-write of shared prefixes), swap blocks between caches. Pure data
// movement, so compiled once (baseline ISA) and parallel over tokens/pairs.
#include <omp.h>

#include <cstring>
#include <torch/library.h>

#include "../core/cache_checks.h"

namespace vllm::cpu_ops {
namespace {

constexpr int64_t kParallelMinBytes = 1 << 18;
constexpr int64_t kParallelMinLines = 2048;

// Key elements d and d + step of one column share a cache line when a block
// row (block_size elements) is shorter than a line.
template <typename E>
constexpr int64_t lines_step(int64_t block_size) {
  const int64_t row_bytes = block_size * int64_t(sizeof(E));
  return row_bytes >= 64 ? 1 : 64 / row_bytes;
}

// Each token's key goes in transposed (its head_size values land block_size
// apart: one column of the block's [head_size, block_size] key matrix); its
// value is one contiguous row. E is a same-size integer stand-in for the
// element type: this only moves bits.
template <typename E>
void scatter_tokens(const CacheShape& s, const int64_t* slots, const void* key,
                    const void* value, void* key_cache, void* value_cache) {
  const E* k_src = static_cast<const E*>(key);
  const E* v_src = static_cast<const E*>(value);
  E* k_dst = static_cast<E*>(key_cache);
  E* v_dst = static_cast<E*>(value_cache);
  const int64_t hs = s.head_size, bs = s.block_size;
  // A key column touches head_size cache lines (one per element once a
  // block row spans a line), mostly cold: a decode step's 64 tokens touch
  // ~12k lines, latency-bound, so threads pay off long before the bytes
  // moved are many; and the next token's lines are requested ahead.
  const int64_t lines_touched = s.num_tokens * s.num_kv_heads * hs;
#pragma omp parallel for schedule(static) if (lines_touched >= kParallelMinLines)
  for (int64_t t = 0; t < s.num_tokens; ++t) {
    const int64_t slot = slots[t];
    if (slot < 0) continue;  // padding
    const int64_t block = slot / bs, offset = slot % bs;
    if (t + 1 < s.num_tokens && slots[t + 1] >= 0) {
      const int64_t next_block = slots[t + 1] / bs, next_offset = slots[t + 1] % bs;
      for (int64_t h = 0; h < s.num_kv_heads; ++h) {
        E* column = k_dst + (next_block * s.num_kv_heads + h) * hs * bs + next_offset;
        for (int64_t d = 0; d < hs; d += lines_step<E>(bs)) __builtin_prefetch(column + d * bs, 1);
      }
    }
    for (int64_t h = 0; h < s.num_kv_heads; ++h) {
      const E* k = k_src + t * s.key_stride + h * hs;
      E* k_block = k_dst + (block * s.num_kv_heads + h) * hs * bs;
      for (int64_t d = 0; d < hs; ++d) k_block[d * bs + offset] = k[d];
      std::memcpy(v_dst + ((block * s.num_kv_heads + h) * bs + offset) * hs,
                  v_src + t * s.value_stride + h * hs, hs * sizeof(E));
    }
  }
}

}  // namespace

void reshape_and_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                       at::Tensor& value_cache, const at::Tensor& slot_mapping,
                       const std::string& kv_cache_dtype, const at::Tensor& k_scale,
                       const at::Tensor& v_scale) {
  constexpr const char* op = "reshape_and_cache";
  const CacheShape s =
      check_reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype);
  if (s.num_tokens == 0) return;
  const int64_t* slots = slot_mapping.data_ptr<int64_t>();
  const int64_t capacity = s.num_blocks * s.block_size;
  for (int64_t t = 0; t < s.num_tokens; ++t) {
    TORCH_CHECK(slots[t] < capacity, op, ": slot ", slots[t], " of token ", t,
                " is beyond the cache's ", capacity, " slots");
  }
  const int64_t esize = key.element_size();
  TORCH_CHECK(esize == 2 || esize == 4, op, ": unsupported element size ", esize);
  if (esize == 2) {
    scatter_tokens<uint16_t>(s, slots, key.data_ptr(), value.data_ptr(), key_cache.data_ptr(),
                             value_cache.data_ptr());
  } else {
    scatter_tokens<uint32_t>(s, slots, key.data_ptr(), value.data_ptr(), key_cache.data_ptr(),
                             value_cache.data_ptr());
  }
}

void copy_blocks(const std::vector<at::Tensor>& key_caches,
                 const std::vector<at::Tensor>& value_caches, const at::Tensor& block_mapping) {
  constexpr const char* op = "copy_blocks";
  const std::vector<at::Tensor> caches = all_caches(key_caches, value_caches, op);
  if (caches.empty()) return;
  const int64_t num_blocks = caches[0].size(0);
  const int64_t block_bytes = check_block_caches(caches, op);
  const at::Tensor pairs = check_block_mapping(block_mapping, num_blocks, num_blocks, op);
  const int64_t* p = pairs.data_ptr<int64_t>();
  const int64_t num_pairs = pairs.size(0);
  const int64_t num_caches = int64_t(caches.size());
#pragma omp parallel for schedule(static) \
    if (num_caches * num_pairs * block_bytes >= kParallelMinBytes)
  for (int64_t job = 0; job < num_caches * num_pairs; ++job) {
    const int64_t c = job / num_pairs, i = job % num_pairs;
    char* base = static_cast<char*>(caches[c].data_ptr());
    std::memcpy(base + p[2 * i + 1] * block_bytes, base + p[2 * i] * block_bytes, block_bytes);
  }
}

void swap_blocks(const at::Tensor& src, at::Tensor& dst, const at::Tensor& block_mapping) {
  constexpr const char* op = "swap_blocks";
  TORCH_CHECK(src.device().is_cpu() && dst.device().is_cpu(), op,
              ": the CPU implementation moves blocks between CPU tensors");
  TORCH_CHECK(src.is_contiguous() && dst.is_contiguous(), op, ": caches must be contiguous");
  TORCH_CHECK(src.scalar_type() == dst.scalar_type() && src.dim() == dst.dim() &&
                  src.sizes().slice(1) == dst.sizes().slice(1),
              op, ": src and dst must share dtype and block shape");
  const at::Tensor pairs = check_block_mapping(block_mapping, src.size(0), dst.size(0), op);
  const int64_t* p = pairs.data_ptr<int64_t>();
  const int64_t num_pairs = pairs.size(0);
  const int64_t block_bytes = src.size(0) == 0 ? 0 : src.numel() / src.size(0) * src.element_size();
  const char* from = static_cast<const char*>(src.data_ptr());
  char* to = static_cast<char*>(dst.data_ptr());
#pragma omp parallel for schedule(static) if (num_pairs * block_bytes >= kParallelMinBytes)
  for (int64_t i = 0; i < num_pairs; ++i) {
    std::memcpy(to + p[2 * i + 1] * block_bytes, from + p[2 * i] * block_bytes, block_bytes);
  }
}

}  // namespace vllm::cpu_ops

TORCH_LIBRARY_IMPL(_C, CPU, ops) {
  ops.impl("reshape_and_cache", &vllm::cpu_ops::reshape_and_cache);
  ops.impl("copy_blocks", &vllm::cpu_ops::copy_blocks);
  ops.impl("swap_blocks", &vllm::cpu_ops::swap_blocks);
}
