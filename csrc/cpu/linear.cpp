// y = x W^T (+ b) for a few rows of x (decode batches): a streaming
// matrix-vector kernel on the plain [n, k] weight. Linear layers use it for
// fp16, and for bf16 where packed_linear (AVX512-BF16, AVX2) is unavailable.
// torch's bf16 path for these shapes reads the weights
// at a fraction of the memory bandwidth; here each thread streams its own
// contiguous block of weight rows once, four rows at a time, and applies
// them to up to four input rows per pass (the four weight rows stay in L1
// for the next pass when there are more input rows). Accumulates in fp32.
#include <omp.h>

#include "dispatch.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

constexpr int W = FloatVec::kWidth;
constexpr int kRowsPerPass = 4;  // weight rows per pass
constexpr int kInputs = 4;  // input rows per pass
// One input row (batch-1 decode) and a layer-sized weight: twice the weight
// rows per pass. SmolLM2's layer GEMVs took 7.0-7.8 instead of 8.4-8.8 ms a
// step this way (module path, per-op averages, builds alternated); its LM
// head (49,152 rows) took 1.84-1.99 instead of 1.68-1.75 ms, so long
// weights keep 4 rows.
constexpr int kRowsOneInput = 8;
constexpr int64_t kRowsOneInputMaxN = 8192;

// Inputs input rows x kRows weight rows (kRowsPerPass or kRowsOneInput);
// both are template parameters so the accumulators stay in registers (a
// runtime count would spill them).
template <typename T, int Inputs, int kRows>
void rows_pass(const LinearArgs& a, const T* const* wr, int rows, int64_t n0, int64_t m0,
               const char* next_block) {
  const T* x = static_cast<const T*>(a.input);
  const T* bias = static_cast<const T*>(a.bias);
  T* out = static_cast<T*>(a.out);
  const int64_t k = a.k;
  const T* xr[Inputs];
#pragma GCC unroll 8
  for (int i = 0; i < Inputs; ++i) xr[i] = x + (m0 + i) * a.input_row_stride;
  // Fully unrolled (GCC's -O2 would not): the arrays then live in registers
  // instead of round-tripping through the stack on every step.
  FloatVec acc[Inputs][kRows];
  int64_t kk = 0;
  // Each step reads kRows * W elements of this block; prefetch as many bytes
  // of the next block (the rows are contiguous, so it is one sweep): the
  // hardware prefetcher alone loses track of four short interleaved streams.
  constexpr int64_t kStepBytes = int64_t(kRows) * W * sizeof(T);
  for (; kk + W <= k; kk += W) {
    if (next_block != nullptr) {
      const char* p = next_block + (kk / W) * kStepBytes;
      for (int64_t off = 0; off < kStepBytes; off += 64) __builtin_prefetch(p + off, 0, 0);
    }
    FloatVec wv[kRows];
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) wv[r] = FloatVec::load(wr[r] + kk);
#pragma GCC unroll 8
    for (int i = 0; i < Inputs; ++i) {
      const FloatVec xv = FloatVec::load(xr[i] + kk);
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) acc[i][r] = FloatVec::fma(xv, wv[r], acc[i][r]);
    }
  }
  if (kk < k) {
    const int tail = int(k - kk);
    FloatVec wv[kRows];
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) wv[r] = load_tail(wr[r] + kk, tail);
#pragma GCC unroll 8
    for (int i = 0; i < Inputs; ++i) {
      const FloatVec xv = load_tail(xr[i] + kk, tail);
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) acc[i][r] = FloatVec::fma(xv, wv[r], acc[i][r]);
    }
  }
  for (int i = 0; i < Inputs; ++i) {
    T* o = out + (m0 + i) * a.out_row_stride + n0;
    for (int r = 0; r < rows; ++r) {
      float y = acc[i][r].reduce_add();
      if (bias != nullptr) y += to_float(bias[n0 + r]);
      from_float(y, o + r);
    }
  }
}

template <typename T, int kRows>
void rows_block(const LinearArgs& a, int64_t n0) {
  const T* w = static_cast<const T*>(a.weight);
  const int rows = int(a.n - n0 < kRows ? a.n - n0 : kRows);
  const T* wr[kRows];
  for (int r = 0; r < kRows; ++r) wr[r] = w + (n0 + (r < rows ? r : 0)) * a.k;
  const bool has_next = n0 + 2 * kRows <= a.n;  // a full next block to prefetch
  for (int64_t m0 = 0; m0 < a.m; m0 += kInputs) {
    // only the first pass streams from memory; later passes hit L1
    const char* next = (m0 == 0 && has_next)
                           ? reinterpret_cast<const char*>(w + (n0 + kRows) * a.k) : nullptr;
    switch (a.m - m0 < kInputs ? int(a.m - m0) : kInputs) {
      case 1: rows_pass<T, 1, kRows>(a, wr, rows, n0, m0, next); break;
      case 2: rows_pass<T, 2, kRows>(a, wr, rows, n0, m0, next); break;
      case 3: rows_pass<T, 3, kRows>(a, wr, rows, n0, m0, next); break;
      default: rows_pass<T, kInputs, kRows>(a, wr, rows, n0, m0, next); break;
    }
  }
}

template <typename T, int kRows>
void run_blocks(const LinearArgs& a) {
  const int64_t blocks = (a.n + kRows - 1) / kRows;
  // static: each thread streams one contiguous range of weight rows
#pragma omp parallel for schedule(static) if (a.n * a.k >= kParallelMinElements)
  for (int64_t b = 0; b < blocks; ++b) rows_block<T, kRows>(a, b * kRows);
}

template <typename T>
struct SmallMLinear {
  static void run(const LinearArgs& a) {
    if (a.m == 1 && a.n <= kRowsOneInputMaxN) {
      run_blocks<T, kRowsOneInput>(a);
    } else {
      run_blocks<T, kRowsPerPass>(a);
    }
  }
};

}  // namespace

void small_m_linear(const LinearArgs& args) { by_dtype<SmallMLinear>(args); }

}  // namespace vllm::cpu::VLLM_ISA_NS
