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
//
// packed_linear_gated fuses a gated MLP's activation into its gate/up
// projection: out = act(x W_gate^T) * (x W_up^T), with W_gate and W_up packed
// as above and their panels interleaved (gate panel j, then up panel j). A
// thread runs gate panel j into a 12 KiB scratch (L1), then up panel j with
// an epilogue that reads it back: the 2d-wide gate/up activations never go
// to memory, the separate act_and_mul pass (read 2d, write d a row) is gone,
// and each thread's weights are still one contiguous stream (with the gate
// and up halves as two streams a 1-row call was 3% slower than the two ops;
// interleaved it is 8% faster). Same roundings as the two ops (gate and up to
// bf16, the activation to bf16, the product to bf16), so the same bits.
#include <omp.h>

#include "activation_math.h"
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
// Epilogue of a plain projection: out = y (+ bias). Gated ones pass the
// Activation as an int.
constexpr int kPlain = -1;

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

inline __m512 widen_bf16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// y rounded to bf16 and back, as storing it and loading it again would.
inline FloatVec round_bf16(__m512 y) {
  return FloatVec(widen_bf16(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(y))));
}

// out[r][0:cols] = x[r] . panel (+ bias) for R rows; for a gated epilogue
// (kAct >= 0, the up panel of a gate/up pair) out[r] = act(gate[r]) * that,
// with gate rows kPanel apart. `prefetch`: the next panel's lines
// [0, prefetch_lines), `per_step` of them per k pair.
template <int R, int kAct>
void micro_kernel(const bf16_t* x, int64_t x_stride, const uint32_t* panel, int64_t kpairs,
                  bf16_t* out, int64_t out_stride, int cols, const bf16_t* bias,
                  const bf16_t* gate, const char* prefetch, int64_t prefetch_lines, int per_step) {
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
                            : widen_bf16(_mm256_maskz_loadu_epi16(mask, bias + 16 * v));
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) {
      const __mmask16 mask = column_mask(cols, v);
      if (mask == 0) continue;
      __m512 y = _mm512_add_ps(acc[r][v], bv[v]);
      if constexpr (kAct != kPlain) {
        const FloatVec g(widen_bf16(_mm256_maskz_loadu_epi16(mask, gate + r * kPanel + 16 * v)));
        y = (round_bf16(apply_activation<Activation(kAct)>(g).v) * round_bf16(y)).v;
      }
      _mm256_mask_storeu_epi16(out + r * out_stride + 16 * v, mask,
                               reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(y)));
    }
  }
}

using MicroKernel = void (*)(const bf16_t*, int64_t, const uint32_t*, int64_t, bf16_t*, int64_t,
                             int, const bf16_t*, const bf16_t*, const char*, int64_t, int);
template <int kAct>
struct MicroKernels {
  static constexpr MicroKernel by_rows[kBlockRows + 1] = {
      nullptr,
      &micro_kernel<1, kAct>, &micro_kernel<2, kAct>, &micro_kernel<3, kAct>, &micro_kernel<4, kAct>,
      &micro_kernel<5, kAct>, &micro_kernel<6, kAct>, &micro_kernel<7, kAct>, &micro_kernel<8, kAct>};
};

// One panel against rows [m0, m1), in blocks of kBlockRows, prefetching
// `next` (may be null) spread over the blocks. Output row r goes to
// out + (r - m0) * out_stride, gate row r (gated epilogues) is read from
// gate + (r - m0) * kPanel.
template <int kAct>
void panel_rows(const LinearArgs& a, int64_t m0, int64_t m1, const uint32_t* panel,
                const char* next, int cols, const bf16_t* bias, bf16_t* out, int64_t out_stride,
                const bf16_t* gate) {
  const bf16_t* x = static_cast<const bf16_t*>(a.input);
  const int64_t kpairs = a.k / 2;
  const int64_t panel_lines = kpairs * kLinesPerPair;
  const int64_t blocks = (m1 - m0 + kBlockRows - 1) / kBlockRows;
  const int per_step = int((kLinesPerPair + blocks - 1) / blocks);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = m0 + b * kBlockRows;
    const int rows = int(m1 - r0 < kBlockRows ? m1 - r0 : kBlockRows);
    const int64_t first_line = b * kpairs * per_step;
    const char* pf = next != nullptr && first_line < panel_lines ? next + first_line * 64 : nullptr;
    MicroKernels<kAct>::by_rows[rows](
        x + r0 * a.input_row_stride, a.input_row_stride, panel, kpairs,
        out + (r0 - m0) * out_stride, out_stride, cols, bias,
        gate == nullptr ? nullptr : gate + (r0 - m0) * kPanel, pf, panel_lines - first_line,
        per_step);
  }
}

void run_plain(const LinearArgs& a) {
  const uint32_t* packed = static_cast<const uint32_t*>(a.weight);
  const bf16_t* bias = static_cast<const bf16_t*>(a.bias);
  bf16_t* out = static_cast<bf16_t*>(a.out);
  const int64_t panels = (a.n + kPanel - 1) / kPanel;
  const int64_t panel_elems = a.k / 2 * kPanel;  // uint32 pairs per panel
#pragma omp parallel if (a.m * a.n * a.k >= kParallelMinElements)
  {
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    // Contiguous panels per thread: its weights are one stream.
    const int64_t p0 = panels * t / threads, p1 = panels * (t + 1) / threads;
    for (int64_t m0 = 0; m0 < a.m; m0 += kRowChunk) {
      const int64_t m1 = m0 + kRowChunk < a.m ? m0 + kRowChunk : a.m;
      for (int64_t p = p0; p < p1; ++p) {
        const uint32_t* panel = packed + p * panel_elems;
        const int cols = int(a.n - p * kPanel < kPanel ? a.n - p * kPanel : kPanel);
        const char* next = p + 1 < p1 ? reinterpret_cast<const char*>(panel + panel_elems) : nullptr;
        panel_rows<kPlain>(a, m0, m1, panel, next, cols, bias == nullptr ? nullptr : bias + p * kPanel,
                           out + m0 * a.out_row_stride + p * kPanel, a.out_row_stride, nullptr);
      }
    }
  }
}

// a.n = 2d outputs, d a multiple of kPanel, panels interleaved (gate panel
// j at 2j, up panel j at 2j + 1); bias (if any) is [b_gate; b_up]; out has
// d columns.
template <int kAct>
void run_gated(const LinearArgs& a) {
  const uint32_t* packed = static_cast<const uint32_t*>(a.weight);
  const bf16_t* bias = static_cast<const bf16_t*>(a.bias);
  bf16_t* out = static_cast<bf16_t*>(a.out);
  const int64_t d = a.n / 2, pairs = d / kPanel;
  const int64_t panel_elems = a.k / 2 * kPanel;
#pragma omp parallel if (a.m * a.n * a.k >= kParallelMinElements)
  {
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t j0 = pairs * t / threads, j1 = pairs * (t + 1) / threads;
    alignas(64) bf16_t gate[kRowChunk * kPanel];  // this panel's gate outputs, rows of kPanel
    for (int64_t m0 = 0; m0 < a.m; m0 += kRowChunk) {
      const int64_t m1 = m0 + kRowChunk < a.m ? m0 + kRowChunk : a.m;
      for (int64_t j = j0; j < j1; ++j) {
        const uint32_t* gate_panel = packed + 2 * j * panel_elems;
        const uint32_t* up_panel = packed + (2 * j + 1) * panel_elems;
        const char* next_gate =
            j + 1 < j1 ? reinterpret_cast<const char*>(up_panel + panel_elems) : nullptr;
        panel_rows<kPlain>(a, m0, m1, gate_panel, reinterpret_cast<const char*>(up_panel), kPanel,
                           bias == nullptr ? nullptr : bias + j * kPanel, gate, kPanel, nullptr);
        panel_rows<kAct>(a, m0, m1, up_panel, next_gate, kPanel,
                         bias == nullptr ? nullptr : bias + d + j * kPanel,
                         out + m0 * a.out_row_stride + j * kPanel, a.out_row_stride, gate);
      }
    }
  }
}

}  // namespace

void packed_linear(const LinearArgs& args) { run_plain(args); }

void packed_linear_gated(const LinearArgs& args, Activation kind) {
  switch (kind) {
    case Activation::kSilu: run_gated<int(Activation::kSilu)>(args); break;
    case Activation::kGelu: run_gated<int(Activation::kGelu)>(args); break;
    case Activation::kGeluTanh:
    case Activation::kGeluNew:
    case Activation::kGeluFast: run_gated<int(Activation::kGeluTanh)>(args); break;
    case Activation::kGeluQuick: run_gated<int(Activation::kGeluQuick)>(args); break;
  }
}
#endif  // elsewhere the kernel table holds null and callers keep oneDNN / torch

}  // namespace vllm::cpu::VLLM_ISA_NS
