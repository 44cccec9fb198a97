// Greedy sampling's argmax, read straight from the model's logits in their
// own dtype. torch needs an fp32 copy first (its bf16 argmax is ~3.5x slower
// than copy + fp32 argmax), and the two cost ~2.7 ms of a 64-sequence
// SmolLM2 decode step.
//
// The answer is torch.argmax's on the fp32 values: the first index of the
// maximum, or the first NaN when a row has one (torch ranks NaN highest).
#include <omp.h>

#include "dispatch.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

constexpr int W = FloatVec::kWidth;
// Elements per chunk of the vectorised pass: one horizontal max per chunk.
constexpr int64_t kChunk = 16 * W;
constexpr float kNegInf = -__builtin_huge_valf();

// Exact scan with torch's NaN rule, for rows holding a NaN or an infinity.
template <typename T>
int64_t argmax_exact(const T* x, int64_t n) {
  float best = to_float(x[0]);
  if (best != best) return 0;
  int64_t idx = 0;
  for (int64_t i = 1; i < n; ++i) {
    const float v = to_float(x[i]);
    if (v != v) return i;
    if (v > best) {
      best = v;
      idx = i;
    }
  }
  return idx;
}

template <typename T>
int64_t argmax_row(const T* x, int64_t n) {
  // Vectorised pass: each chunk's max, keeping the first chunk that holds
  // the row's max; and sum(v - v), which is NaN iff some element is NaN or
  // infinite (the exact scan then decides).
  float best = kNegInf;
  int64_t best_chunk = -1;
  FloatVec check0, check1;
  int64_t i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    FloatVec m0(kNegInf), m1(kNegInf);
    for (int64_t j = i; j < i + kChunk; j += 2 * W) {
      const FloatVec a = FloatVec::load(x + j), b = FloatVec::load(x + j + W);
      m0 = FloatVec::max(m0, a);
      m1 = FloatVec::max(m1, b);
      check0 = check0 + (a - a);
      check1 = check1 + (b - b);
    }
    const float chunk_max = FloatVec::max(m0, m1).reduce_max();
    if (chunk_max > best) {
      best = chunk_max;
      best_chunk = i;
    }
  }
  float check = (check0 + check1).reduce_add();
  int64_t tail_idx = -1;
  for (; i < n; ++i) {
    const float v = to_float(x[i]);
    check += v - v;
    if (v > best) {
      best = v;
      tail_idx = i;
    }
  }
  if (check != check) return argmax_exact(x, n);
  if (tail_idx >= 0) return tail_idx;  // above every chunk: its first occurrence
  for (int64_t j = best_chunk; j < best_chunk + kChunk; ++j)
    if (to_float(x[j]) == best) return j;
  return best_chunk;  // not reached: the chunk holds its max
}

template <typename T>
struct ArgmaxFn {
  static void run(const ArgmaxArgs& a) {
    const T* logits = static_cast<const T*>(a.logits);
    const bool parallel = a.num_rows > 1 && a.num_rows * a.vocab >= kParallelMinElements;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t r = 0; r < a.num_rows; ++r)
      a.out[r] = argmax_row(logits + r * a.row_stride, a.vocab);
  }
};

}  // namespace

void argmax_rows(const ArgmaxArgs& args) { by_dtype<ArgmaxFn>(args); }

}  // namespace vllm::cpu::VLLM_ISA_NS
