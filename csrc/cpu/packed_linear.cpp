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
#include "packed_driver.h"

namespace vllm::cpu::VLLM_ISA_NS {

#if defined(VLLM_HAS_PANEL_KERNEL)
namespace {

// Panels [p0, p1) of the output for every row; the thread's stream goes on
// to stream_end (>= p1): the last panel prefetches into the next below it.
void plain_panels(const LinearArgs& a, const KernelInput& x, int64_t p0, int64_t p1,
                  int64_t stream_end) {
  const uint32_t* packed = static_cast<const uint32_t*>(a.weight);
  const bf16_t* bias = static_cast<const bf16_t*>(a.bias);
  bf16_t* out = static_cast<bf16_t*>(a.out);
  const int64_t panel_elems = a.k / 2 * kPanel;  // uint32 pairs per panel
  for (int64_t m0 = 0; m0 < a.m; m0 += kRowChunk) {
    const int64_t m1 = m0 + kRowChunk < a.m ? m0 + kRowChunk : a.m;
    for (int64_t p = p0; p < p1; ++p) {
      const uint32_t* panel = packed + p * panel_elems;
      const int cols = int(a.n - p * kPanel < kPanel ? a.n - p * kPanel : kPanel);
      const char* next =
          p + 1 < stream_end ? reinterpret_cast<const char*>(panel + panel_elems) : nullptr;
      panel_rows<kPlain>(a, x, m0, m1, panel, next, cols,
                         bias == nullptr ? nullptr : bias + p * kPanel,
                         out + m0 * a.out_row_stride + p * kPanel, a.out_row_stride, nullptr);
    }
  }
}

// Gate/up panel pairs [j0, j1) (out columns [48 j0, 48 j1)) for every row,
// the thread's stream going on to pair stream_end (>= j1):
// a.n = 2d outputs, each half padded to whole panels (zero columns past d),
// panels interleaved (gate panel j at 2j, up panel j at 2j + 1); bias (if
// any) is [b_gate; b_up]; out has d columns.
template <int kAct>
void gated_pairs(const LinearArgs& a, const KernelInput& x, int64_t j0, int64_t j1,
                 int64_t stream_end) {
  const uint32_t* packed = static_cast<const uint32_t*>(a.weight);
  const bf16_t* bias = static_cast<const bf16_t*>(a.bias);
  bf16_t* out = static_cast<bf16_t*>(a.out);
  const int64_t d = a.n / 2;
  const int64_t panel_elems = a.k / 2 * kPanel;
  alignas(64) bf16_t gate[kRowChunk * kPanel];  // this panel's gate outputs, rows of kPanel
  for (int64_t m0 = 0; m0 < a.m; m0 += kRowChunk) {
    const int64_t m1 = m0 + kRowChunk < a.m ? m0 + kRowChunk : a.m;
    for (int64_t j = j0; j < j1; ++j) {
      const uint32_t* gate_panel = packed + 2 * j * panel_elems;
      const uint32_t* up_panel = packed + (2 * j + 1) * panel_elems;
      const char* next_gate =
          j + 1 < stream_end ? reinterpret_cast<const char*>(up_panel + panel_elems) : nullptr;
      // the last pair may hold fewer than kPanel real columns: the gate
      // scratch's other columns are never stored from
      const int cols = int(d - j * kPanel < kPanel ? d - j * kPanel : kPanel);
      panel_rows<kPlain>(a, x, m0, m1, gate_panel, reinterpret_cast<const char*>(up_panel),
                         cols, bias == nullptr ? nullptr : bias + j * kPanel, gate, kPanel,
                         nullptr);
      panel_rows<kAct>(a, x, m0, m1, up_panel, next_gate, cols,
                       bias == nullptr ? nullptr : bias + d + j * kPanel,
                       out + m0 * a.out_row_stride + j * kPanel, a.out_row_stride, gate);
    }
  }
}

void run_plain(const LinearArgs& a) {
  const int64_t panels = (a.n + kPanel - 1) / kPanel;
  InputScratch scratch(a);
#pragma omp parallel if (a.m * a.n * a.k >= kParallelMinElements)
  {
    const KernelInput x = kernel_input(a, scratch.data);
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    // Contiguous panels per thread: its weights are one stream.
    const int64_t p0 = panels * t / threads, p1 = panels * (t + 1) / threads;
    plain_panels(a, x, p0, p1, p1);
  }
}

template <int kAct>
void run_gated(const LinearArgs& a) {
  const int64_t pairs = (a.n / 2 + kPanel - 1) / kPanel;
  InputScratch scratch(a);
#pragma omp parallel if (a.m * a.n * a.k >= kParallelMinElements)
  {
    const KernelInput x = kernel_input(a, scratch.data);
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t j0 = pairs * t / threads, j1 = pairs * (t + 1) / threads;
    gated_pairs<kAct>(a, x, j0, j1, j1);
  }
}

// x as one thread reads it on its own: the caller's rows, or (fp32-computing
// kernels) every row widened by this thread into `scratch` (m x k floats),
// or left there by its earlier call on the same x (`widen` false).
KernelInput own_input(const LinearArgs& a, float* scratch, bool widen) {
  if constexpr (!PanelKernel::kWidensInput) {
    return {static_cast<const Input*>(a.input), a.input_row_stride};
  } else {
    if (widen) widen_rows(a, 0, a.m, scratch);
    return {reinterpret_cast<const Input*>(scratch), a.k};
  }
}

}  // namespace

void packed_linear(const LinearArgs& args) { run_plain(args); }

void packed_linear_gated(const LinearArgs& args, Activation kind) {
  with_gated_activation(kind, [&](auto act) { run_gated<decltype(act)::value>(args); });
}

void packed_linear_range(const LinearArgs& args, int64_t p0, int64_t p1, int64_t stream_end,
                         float* scratch, bool widen_x) {
  plain_panels(args, own_input(args, scratch, widen_x), p0, p1, stream_end);
}

void packed_linear_gated_range(const LinearArgs& args, Activation kind, int64_t j0, int64_t j1,
                               int64_t stream_end, float* scratch, bool widen_x) {
  const KernelInput x = own_input(args, scratch, widen_x);
  with_gated_activation(kind, [&](auto act) {
    gated_pairs<decltype(act)::value>(args, x, j0, j1, stream_end);
  });
}
#endif  // elsewhere the kernel table holds null and callers keep oneDNN / torch

}  // namespace vllm::cpu::VLLM_ISA_NS
