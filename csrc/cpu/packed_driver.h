// The packed-panel GEMM driver shared by packed_linear.cpp (dense layers)
// and packed_moe.cpp (MoE experts): the micro-kernel switch over row counts,
// the widening of x for fp32-computing kernels, and one panel against a run
// of rows with the next panel prefetched. Included by ISA sources only, after
// the panel kernel header (everything here has internal linkage).
#pragma once

#include <omp.h>

#include <cstdlib>
#include <type_traits>

#include "dispatch.h"

#if defined(VLLM_ISA_AVX512) && defined(__AVX512BF16__)
#include "packed_panel_avx512.h"
#define VLLM_HAS_PANEL_KERNEL 1
#elif defined(VLLM_ISA_AVX2)
#include "packed_panel_avx2.h"
#define VLLM_HAS_PANEL_KERNEL 1
#endif

namespace vllm::cpu::VLLM_ISA_NS {

#if defined(VLLM_HAS_PANEL_KERNEL)
namespace {

using Input = PanelKernel::Input;
constexpr int kPanel = int(kPackedLinearPanel);
constexpr int kBlockRows = PanelKernel::kBlockRows;
constexpr int kLinesPerPair = kPanel * 4 / 64;  // cache lines of one k pair's weights
// Rows per pass over a thread's panels: its slice of x (128 bf16 rows or 60
// fp32 rows x k) stays in L2 while the panels go by. A whole number of
// blocks (AVX2: 60, not 64, which left a 4-row block in every chunk).
constexpr int64_t kRowChunk = 256 / sizeof(Input) / kBlockRows * kBlockRows;
// Epilogue of a plain projection: out = y (+ bias). Gated ones pass the
// Activation as an int.
constexpr int kPlain = -1;

template <int kAct>
void micro_kernel(int rows, const Input* x, int64_t x_stride, const uint32_t* panel,
                  int64_t kpairs, bf16_t* out, int64_t out_stride, int cols, const bf16_t* bias,
                  const bf16_t* gate, const char* prefetch, int64_t prefetch_lines, int per_step) {
#define VLLM_ROWS_CASE(R)                                                                  \
  case R:                                                                                  \
    if constexpr (R <= kBlockRows)                                                         \
      PanelKernel::run<R, kAct>(x, x_stride, panel, kpairs, out, out_stride, cols, bias,   \
                                gate, prefetch, prefetch_lines, per_step);                 \
    break;
  switch (rows) {
    VLLM_ROWS_CASE(1) VLLM_ROWS_CASE(2) VLLM_ROWS_CASE(3) VLLM_ROWS_CASE(4)
    VLLM_ROWS_CASE(5) VLLM_ROWS_CASE(6) VLLM_ROWS_CASE(7) VLLM_ROWS_CASE(8)
  }
#undef VLLM_ROWS_CASE
}

// x as the micro-kernel reads it: the caller's rows, or (fp32-computing
// kernels) those rows widened into `scratch` ([m, k], contiguous), each
// thread widening its share; call from inside the parallel region.
struct KernelInput {
  const Input* rows;
  int64_t stride;
};
// x's rows [r0, r1) widened from bf16 into scratch ([m, k], contiguous).
void widen_rows(const LinearArgs& a, int64_t r0, int64_t r1, float* scratch) {
  const bf16_t* x = static_cast<const bf16_t*>(a.input);
  constexpr int W = FloatVec::kWidth;
  for (int64_t r = r0; r < r1; ++r) {
    const bf16_t* src = x + r * a.input_row_stride;
    float* dst = scratch + r * a.k;
    int64_t i = 0;
    for (; i + W <= a.k; i += W) FloatVec::load(src + i).store(dst + i);
    if (i < a.k) store_tail(load_tail(src + i, int(a.k - i)), dst + i, int(a.k - i));
  }
}

KernelInput kernel_input(const LinearArgs& a, float* scratch) {
  if constexpr (!PanelKernel::kWidensInput) {
    return {static_cast<const Input*>(a.input), a.input_row_stride};
  } else {
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    widen_rows(a, a.m * t / threads, a.m * (t + 1) / threads, scratch);
#pragma omp barrier
    return {reinterpret_cast<const Input*>(scratch), a.k};
  }
}

// Scratch for kernel_input: m rows of k floats, or null where x is read as
// it is.
struct InputScratch {
  float* data = nullptr;
  explicit InputScratch(const LinearArgs& a) {
    if constexpr (PanelKernel::kWidensInput) {
      data = static_cast<float*>(std::malloc(sizeof(float) * a.m * a.k));
    }
  }
  ~InputScratch() { std::free(data); }
  InputScratch(const InputScratch&) = delete;
  InputScratch& operator=(const InputScratch&) = delete;
};

// How far ahead of its reads a one-row call prefetches (into L2): within
// the panel, then into the next one. Why not the next panel's lines at the
// same offset, as several rows do: that leaves each thread's first panel of
// a call (55-147 KiB of SmolLM2's projections, up to a sixth of a share)
// unprefetched. The decode step's 120 projections on their huge-page
// weights, one row, median of 7, alternated in one process (2 threads):
// 89-96% of torch.sum's read bandwidth the old way, 97-103% 16 KiB ahead,
// 97-108% 24-32 KiB ahead; the engine's batch-1 token 4% faster on both
// kernel variants (bench/RESULTS.md, session 20).
constexpr int64_t kOneRowPrefetchAhead = 24 << 10;

// One panel against rows [m0, m1), in blocks of kBlockRows, prefetching
// `next` (may be null; when not, the bytes right after `panel`) spread over
// the blocks, or for one row the stream kOneRowPrefetchAhead ahead. Output
// row r goes to out + (r - m0) * out_stride, gate row r (gated epilogues)
// is read from gate + (r - m0) * kPanel.
template <int kAct>
void panel_rows(const LinearArgs& a, const KernelInput& x, int64_t m0, int64_t m1,
                const uint32_t* panel, const char* next, int cols, const bf16_t* bias,
                bf16_t* out, int64_t out_stride, const bf16_t* gate) {
  const int64_t kpairs = a.k / 2;
  const int64_t panel_lines = kpairs * kLinesPerPair;
  if (m1 - m0 == 1) {
    // Line i of the stream ahead is line i + ahead of the panel: past the
    // panel's end that is the next panel's, and where this panel is the
    // thread's last, the prefetching stops at its end.
    constexpr int64_t ahead = kOneRowPrefetchAhead / 64;
    const int64_t lines = next != nullptr ? panel_lines : panel_lines - ahead;
    micro_kernel<kAct>(1, x.rows + m0 * x.stride, x.stride, panel, kpairs, out, out_stride, cols,
                       bias, gate,
                       lines > 0 ? reinterpret_cast<const char*>(panel) + ahead * 64 : nullptr,
                       lines, kLinesPerPair);
    return;
  }
  // Rows dealt evenly over the blocks (sizes differ by one at most): 64
  // rows on AVX2 are 9 blocks of 6 and 2 of 5, not 10 of 6 and one of 4, a
  // block with fewer independent FMAs to hide their latency.
  const int64_t blocks = (m1 - m0 + kBlockRows - 1) / kBlockRows;
  const int per_step = int((kLinesPerPair + blocks - 1) / blocks);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = m0 + (m1 - m0) * b / blocks;
    const int rows = int(m0 + (m1 - m0) * (b + 1) / blocks - r0);
    const int64_t first_line = b * kpairs * per_step;
    const char* pf = next != nullptr && first_line < panel_lines ? next + first_line * 64 : nullptr;
    micro_kernel<kAct>(rows, x.rows + r0 * x.stride, x.stride, panel, kpairs,
                       out + (r0 - m0) * out_stride, out_stride, cols, bias,
                       gate == nullptr ? nullptr : gate + (r0 - m0) * kPanel, pf,
                       panel_lines - first_line, per_step);
  }
}

// fn(std::integral_constant<int, act>) for a gated activation kind: the
// epilogues are compiled per activation (the gelu-tanh aliases share one).
template <typename Fn>
void with_gated_activation(Activation kind, Fn&& fn) {
  switch (kind) {
    case Activation::kSilu: fn(std::integral_constant<int, int(Activation::kSilu)>{}); break;
    case Activation::kGelu: fn(std::integral_constant<int, int(Activation::kGelu)>{}); break;
    case Activation::kGeluTanh:
    case Activation::kGeluNew:
    case Activation::kGeluFast:
      fn(std::integral_constant<int, int(Activation::kGeluTanh)>{});
      break;
    case Activation::kGeluQuick:
      fn(std::integral_constant<int, int(Activation::kGeluQuick)>{});
      break;
  }
}

}  // namespace
#endif

}  // namespace vllm::cpu::VLLM_ISA_NS
