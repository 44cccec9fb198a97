// y = x W^T (+ b) for bf16, with W packed once at load into panels of
// kPackedLinearPanel (48) output columns whose weights are stored as (k, k+1)
// pairs: [panels][k / 2][48][2]. That is vdpbf16ps's operand layout on
// AVX512-BF16 (packed_panel_avx512.h), and on AVX2 it widens to fp32 with
// one integer op per 8 weights (packed_panel_avx2.h): one layout, one
// packing, one driver (this file) for both; only the micro-kernel differs.
//
// Why not oneDNN: on SmolLM2's decode batches (64 rows) its GEMMs ran at
// ~333 GFLOP/s in a real step against a ~440 peak, 75% of the step's time;
// on AVX2 torch has no bf16 GEMM worth the name (under 1 GFLOP/s).
//
// A thread owns a contiguous range of panels (the weights stream once per
// row chunk, from DRAM for the first) and, while it works on one panel,
// prefetches the next so the first row block does not stall on memory.
//
// packed_linear_gated fuses a gated MLP's activation into its gate/up
// projection: out = act(x W_gate^T) * (x W_up^T), with W_gate and W_up packed
// as above and their panels interleaved (gate panel j, then up panel j). A
// thread runs gate panel j into a 12 KiB (AVX2: 6 KiB) scratch (L1), then up panel j with
// an epilogue that reads it back: the 2d-wide gate/up activations never go
// to memory, the separate act_and_mul pass (read 2d, write d a row) is gone,
// and each thread's weights are still one contiguous stream (with the gate
// and up halves as two streams a 1-row call was 3% slower than the two ops;
// interleaved it is 8% faster). Same roundings as the two ops (gate and up to
// bf16, the activation to bf16, the product to bf16), so the same bits.
#include <omp.h>

#include <cstdlib>

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
// Rows per pass over a thread's panels: its slice of x (128 bf16 rows or 64
// fp32 rows x k) stays in L2 while the panels go by.
constexpr int64_t kRowChunk = 256 / sizeof(Input);
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
KernelInput kernel_input(const LinearArgs& a, float* scratch) {
  if constexpr (!PanelKernel::kWidensInput) {
    return {static_cast<const Input*>(a.input), a.input_row_stride};
  } else {
    const bf16_t* x = static_cast<const bf16_t*>(a.input);
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    constexpr int W = FloatVec::kWidth;
    for (int64_t r = a.m * t / threads; r < a.m * (t + 1) / threads; ++r) {
      const bf16_t* src = x + r * a.input_row_stride;
      float* dst = scratch + r * a.k;
      int64_t i = 0;
      for (; i + W <= a.k; i += W) FloatVec::load(src + i).store(dst + i);
      if (i < a.k) store_tail(load_tail(src + i, int(a.k - i)), dst + i, int(a.k - i));
    }
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

// One panel against rows [m0, m1), in blocks of kBlockRows, prefetching
// `next` (may be null) spread over the blocks. Output row r goes to
// out + (r - m0) * out_stride, gate row r (gated epilogues) is read from
// gate + (r - m0) * kPanel.
template <int kAct>
void panel_rows(const LinearArgs& a, const KernelInput& x, int64_t m0, int64_t m1,
                const uint32_t* panel, const char* next, int cols, const bf16_t* bias,
                bf16_t* out, int64_t out_stride, const bf16_t* gate) {
  const int64_t kpairs = a.k / 2;
  const int64_t panel_lines = kpairs * kLinesPerPair;
  const int64_t blocks = (m1 - m0 + kBlockRows - 1) / kBlockRows;
  const int per_step = int((kLinesPerPair + blocks - 1) / blocks);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = m0 + b * kBlockRows;
    const int rows = int(m1 - r0 < kBlockRows ? m1 - r0 : kBlockRows);
    const int64_t first_line = b * kpairs * per_step;
    const char* pf = next != nullptr && first_line < panel_lines ? next + first_line * 64 : nullptr;
    micro_kernel<kAct>(rows, x.rows + r0 * x.stride, x.stride, panel, kpairs,
                       out + (r0 - m0) * out_stride, out_stride, cols, bias,
                       gate == nullptr ? nullptr : gate + (r0 - m0) * kPanel, pf,
                       panel_lines - first_line, per_step);
  }
}

void run_plain(const LinearArgs& a) {
  const uint32_t* packed = static_cast<const uint32_t*>(a.weight);
  const bf16_t* bias = static_cast<const bf16_t*>(a.bias);
  bf16_t* out = static_cast<bf16_t*>(a.out);
  const int64_t panels = (a.n + kPanel - 1) / kPanel;
  const int64_t panel_elems = a.k / 2 * kPanel;  // uint32 pairs per panel
  InputScratch scratch(a);
#pragma omp parallel if (a.m * a.n * a.k >= kParallelMinElements)
  {
    const KernelInput x = kernel_input(a, scratch.data);
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    // Contiguous panels per thread: its weights are one stream.
    const int64_t p0 = panels * t / threads, p1 = panels * (t + 1) / threads;
    for (int64_t m0 = 0; m0 < a.m; m0 += kRowChunk) {
      const int64_t m1 = m0 + kRowChunk < a.m ? m0 + kRowChunk : a.m;
      for (int64_t p = p0; p < p1; ++p) {
        const uint32_t* panel = packed + p * panel_elems;
        const int cols = int(a.n - p * kPanel < kPanel ? a.n - p * kPanel : kPanel);
        const char* next = p + 1 < p1 ? reinterpret_cast<const char*>(panel + panel_elems) : nullptr;
        panel_rows<kPlain>(a, x, m0, m1, panel, next, cols,
                           bias == nullptr ? nullptr : bias + p * kPanel,
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
  InputScratch scratch(a);
#pragma omp parallel if (a.m * a.n * a.k >= kParallelMinElements)
  {
    const KernelInput x = kernel_input(a, scratch.data);
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
        panel_rows<kPlain>(a, x, m0, m1, gate_panel, reinterpret_cast<const char*>(up_panel),
                           kPanel, bias == nullptr ? nullptr : bias + j * kPanel, gate, kPanel,
                           nullptr);
        panel_rows<kAct>(a, x, m0, m1, up_panel, next_gate, kPanel,
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
