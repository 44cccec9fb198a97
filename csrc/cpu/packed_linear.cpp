// y = x W^T (+ b) for bf16 on AVX512-BF16 CPUs, with W packed once at load
// into panels of kPackedLinearPanel (48) output columns whose weights are
// stored as (k, k+1) pairs: [panels][k / 2][48][2]. That is vdpbf16ps's
// operand layout: one 64-byte load gives 16 columns' pairs, so the inner
// loop is loads, broadcasts of x's pairs and dot products, nothing else.
//
// Why not oneDNN: on SmolLM2's decode batches (64 rows) its GEMMs ran at
// ~333 GFLOP/s in a real step against a ~440 peak, 75% of the step's time.
//
// Micro-kernel: up to 8 rows x 48 columns = 24 fp32 accumulators in
// registers; per k pair 3 weight loads, 8 broadcasts and 24 dot products.
// A thread owns a contiguous range of panels (the weights stream once per
// row chunk, from DRAM for the first) and, while it works on one panel,
// prefetches the next so the first row block does not stall on memory.
#include <omp.h>

#include "dispatch.h"

namespace vllm::cpu::VLLM_ISA_NS {

#if defined(VLLM_ISA_AVX512) && defined(__AVX512BF16__)
namespace {

constexpr int kPanel = int(kPackedLinearPanel);
constexpr int kVecs = kPanel / 16;     // 16-column vectors per panel
constexpr int kBlockRows = 8;          // rows per micro-kernel call
constexpr int kLinesPerPair = kPanel * 4 / 64;  // cache lines of one k pair's weights
// Rows per pass over a thread's panels: its slice of x (128 rows x k) stays
// in L2 while the panels go by.
constexpr int64_t kRowChunk = 128;

inline uint32_t load_pair(const bf16_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Lanes of vector v that hold one of the panel's `cols` real columns.
inline __mmask16 column_mask(int cols, int v) {
  const int lanes = cols - 16 * v;
  return lanes >= 16 ? __mmask16(0xffff) : lanes <= 0 ? __mmask16(0) : __mmask16((1u << lanes) - 1);
}

// out[r][0:cols] = x[r] . panel (+ bias) for R rows. `prefetch`: the next
// panel's lines [0, prefetch_lines), `per_step` of them per k pair.
template <int R>
void micro_kernel(const bf16_t* x, int64_t x_stride, const uint32_t* panel, int64_t kpairs,
                  bf16_t* out, int64_t out_stride, int cols, const bf16_t* bias,
                  const char* prefetch, int64_t prefetch_lines, int per_step) {
  __m512 acc[R][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < kpairs; ++kp) {
    if (prefetch != nullptr) {
      for (int i = 0; i < per_step; ++i) {
        const int64_t line = kp * per_step + i;
        if (line < prefetch_lines) __builtin_prefetch(prefetch + line * 64, 0, 3);
      }
    }
    const uint32_t* w = panel + kp * kPanel;
    __m512bh b[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) b[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + 16 * v));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512bh a = reinterpret_cast<__m512bh>(_mm512_set1_epi32(int(load_pair(x + r * x_stride + 2 * kp))));
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, b[v]);
    }
  }
  __m512 bv[kVecs];
#pragma GCC unroll 4
  for (int v = 0; v < kVecs; ++v) {
    const __mmask16 mask = column_mask(cols, v);
    bv[v] = bias == nullptr ? _mm512_setzero_ps()
                            : _mm512_castsi512_ps(_mm512_slli_epi32(
                                  _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, bias + 16 * v)), 16));
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) {
      const __mmask16 mask = column_mask(cols, v);
      if (mask == 0) continue;
      const __m256bh y = _mm512_cvtneps_pbh(_mm512_add_ps(acc[r][v], bv[v]));
      _mm256_mask_storeu_epi16(out + r * out_stride + 16 * v, mask, reinterpret_cast<__m256i>(y));
    }
  }
}

using MicroKernel = void (*)(const bf16_t*, int64_t, const uint32_t*, int64_t, bf16_t*, int64_t,
                             int, const bf16_t*, const char*, int64_t, int);
constexpr MicroKernel kMicroKernels[kBlockRows + 1] = {
    nullptr,          &micro_kernel<1>, &micro_kernel<2>, &micro_kernel<3>, &micro_kernel<4>,
    &micro_kernel<5>, &micro_kernel<6>, &micro_kernel<7>, &micro_kernel<8>};

void run(const LinearArgs& a) {
  const bf16_t* x = static_cast<const bf16_t*>(a.input);
  const uint32_t* packed = static_cast<const uint32_t*>(a.weight);
  const bf16_t* bias = static_cast<const bf16_t*>(a.bias);
  bf16_t* out = static_cast<bf16_t*>(a.out);
  const int64_t kpairs = a.k / 2;
  const int64_t panels = (a.n + kPanel - 1) / kPanel;
  const int64_t panel_elems = kpairs * kPanel;  // uint32 pairs per panel
  const int64_t panel_lines = kpairs * kLinesPerPair;
  const bool parallel = a.m * a.n * a.k >= kParallelMinElements;
#pragma omp parallel if (parallel)
  {
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    // Contiguous panels per thread: its weights are one stream.
    const int64_t p0 = panels * t / threads, p1 = panels * (t + 1) / threads;
    for (int64_t m0 = 0; m0 < a.m; m0 += kRowChunk) {
      const int64_t m1 = m0 + kRowChunk < a.m ? m0 + kRowChunk : a.m;
      const int64_t blocks = (m1 - m0 + kBlockRows - 1) / kBlockRows;
      // The next panel's lines, spread over this panel's row blocks.
      const int per_step = int((kLinesPerPair + blocks - 1) / blocks);
      for (int64_t p = p0; p < p1; ++p) {
        const uint32_t* panel = packed + p * panel_elems;
        const int cols = int(a.n - p * kPanel < kPanel ? a.n - p * kPanel : kPanel);
        const char* next = p + 1 < p1 ? reinterpret_cast<const char*>(panel + panel_elems) : nullptr;
        for (int64_t b = 0; b < blocks; ++b) {
          const int64_t r0 = m0 + b * kBlockRows;
          const int rows = int(m1 - r0 < kBlockRows ? m1 - r0 : kBlockRows);
          const int64_t first_line = b * kpairs * per_step;
          const char* pf = next != nullptr && first_line < panel_lines ? next + first_line * 64 : nullptr;
          kMicroKernels[rows](x + r0 * a.input_row_stride, a.input_row_stride, panel, kpairs,
                              out + r0 * a.out_row_stride + p * kPanel, a.out_row_stride, cols,
                              bias == nullptr ? nullptr : bias + p * kPanel, pf,
                              panel_lines - first_line, per_step);
        }
      }
    }
  }
}

}  // namespace

void packed_linear(const LinearArgs& args) { run(args); }
#endif  // elsewhere the kernel table holds null and callers keep oneDNN / torch

}  // namespace vllm::cpu::VLLM_ISA_NS
