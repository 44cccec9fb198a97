// Rotary position embedding (NeoX and GPT-J styles), in place, fp32 math.
#include <omp.h>

#include "dispatch.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

constexpr int W = FloatVec::kWidth;

// NeoX: the two halves of the rotated part are contiguous, so whole vectors
// of x1 = x[i], x2 = x[i + half] rotate together.
template <typename T>
void rotate_neox(T* x, const T* cos, const T* sin, int64_t half) {
  int64_t i = 0;
  for (; i + W <= half; i += W) {
    const FloatVec x1 = FloatVec::load(x + i), x2 = FloatVec::load(x + half + i);
    const FloatVec c = FloatVec::load(cos + i), s = FloatVec::load(sin + i);
    (x1 * c - x2 * s).store(x + i);
    (x2 * c + x1 * s).store(x + half + i);
  }
  if (i < half) {
    const int n = int(half - i);
    const FloatVec x1 = load_tail(x + i, n), x2 = load_tail(x + half + i, n);
    const FloatVec c = load_tail(cos + i, n), s = load_tail(sin + i, n);
    store_tail(x1 * c - x2 * s, x + i, n);
    store_tail(x2 * c + x1 * s, x + half + i, n);
  }
}

// GPT-J: interleaved pairs (2i, 2i+1); scalar, as the pairs straddle lanes.
template <typename T>
void rotate_gptj(T* x, const T* cos, const T* sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = to_float(x[2 * i]), x2 = to_float(x[2 * i + 1]);
    const float c = to_float(cos[i]), s = to_float(sin[i]);
    from_float(x1 * c - x2 * s, &x[2 * i]);
    from_float(x2 * c + x1 * s, &x[2 * i + 1]);
  }
}

template <typename T>
void rotary_typed(const RotaryArgs& a) {
  const int64_t half = a.rot_dim / 2;
  const T* cache = static_cast<const T*>(a.cos_sin_cache);
  T* query = static_cast<T*>(a.query);
  T* key = static_cast<T*>(a.key);
  const int64_t heads_per_token = a.num_heads + (key ? a.num_kv_heads : 0);
#pragma omp parallel for schedule(static) \
    if (a.num_tokens * heads_per_token * a.rot_dim >= kParallelMinElements)
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const T* cos = cache + a.positions[t] * a.rot_dim;
    const T* sin = cos + half;
    for (int64_t h = 0; h < heads_per_token; ++h) {
      T* x = h < a.num_heads
                 ? query + t * a.query_token_stride + h * a.head_size
                 : key + t * a.key_token_stride + (h - a.num_heads) * a.head_size;
      if (a.is_neox) {
        rotate_neox(x, cos, sin, half);
      } else {
        rotate_gptj(x, cos, sin, half);
      }
    }
  }
}

template <typename T>
struct RotaryFn { static void run(const RotaryArgs& a) { rotary_typed<T>(a); } };

}  // namespace

void rotary_embedding(const RotaryArgs& args) { by_dtype<RotaryFn>(args); }

}  // namespace vllm::cpu::VLLM_ISA_NS
