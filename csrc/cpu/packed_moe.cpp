// A MoE layer's routed experts in one call, on the packed-panel GEMMs the
// dense layers use (packed_driver.h): the (token, choice) pairs are sorted
// by expert (a counting sort), then for each expert that any token chose:
// its tokens' rows are gathered, its gate/up projection and activation run
// as packed_linear_gated runs them, its down projection as packed_linear,
// and each output row, times its routing weight, is added into an fp32
// accumulator. One OpenMP region spans the layer; for every expert the
// threads split its panels (contiguous runs: each thread's share of the
// expert's weights is one stream), so an expert's weights are read once per
// call and an expert nobody chose is never read. A thread adds the columns
// of the down-projection panels it computed, so the accumulation needs no
// atomics, and each token's sum runs in expert order: the same roundings as
// the Python path over the same kernels (experts.grouped_expert_pass).
#include <cstring>

#include "packed_driver.h"

namespace vllm::cpu::VLLM_ISA_NS {

#if defined(VLLM_HAS_PANEL_KERNEL)
namespace {

// Rows src[rows[i]] (or src[i] without `rows`), i in this thread's share of
// [0, count), as the micro-kernel reads them: bf16 copied, or widened to fp32.
void gather_rows(const bf16_t* src, int64_t src_stride, const int32_t* rows, int64_t count,
                 int64_t k, Input* dst) {
  const int threads = omp_get_num_threads(), t = omp_get_thread_num();
  for (int64_t i = count * t / threads; i < count * (t + 1) / threads; ++i) {
    const bf16_t* s = src + (rows == nullptr ? i : rows[i]) * src_stride;
    Input* d = dst + i * k;
    if constexpr (PanelKernel::kWidensInput) {
      constexpr int W = FloatVec::kWidth;
      int64_t c = 0;
      for (; c + W <= k; c += W) FloatVec::load(s + c).store(d + c);
      if (c < k) store_tail(load_tail(s + c, int(k - c)), d + c, int(k - c));
    } else {
      std::memcpy(d, s, sizeof(bf16_t) * k);
    }
  }
}

// acc[rows[r]][0:cols] += weight[r] * y[r][0:cols] for r in [0, count): the
// product rounded to fp32, then added (as torch's index_add_ of y * w).
void accumulate(float* acc, int64_t acc_stride, const int32_t* rows, const float* weight,
                const bf16_t* y, int64_t y_stride, int64_t count, int cols) {
  constexpr int W = FloatVec::kWidth;
  for (int64_t r = 0; r < count; ++r) {
    float* dst = acc + rows[r] * acc_stride;
    const bf16_t* src = y + r * y_stride;
    const FloatVec w(weight[r]);
    int c = 0;
    for (; c + W <= cols; c += W) {
      const FloatVec product = FloatVec::load(src + c) * w;
      (FloatVec::load(dst + c) + product).store(dst + c);
    }
    if (c < cols) {
      const FloatVec product = load_tail(src + c, cols - c) * w;
      store_tail(load_tail(dst + c, cols - c) + product, dst + c, cols - c);
    }
  }
}

struct Routing {  // the (token, choice) pairs grouped by expert
  int64_t* start = nullptr;  // expert e's pairs: [start[e], start[e + 1])
  int32_t* token = nullptr;
  float* weight = nullptr;
  int64_t max_count = 0;
  explicit Routing(const MoeArgs& a) {
    const int64_t pairs = a.m * a.topk;
    start = static_cast<int64_t*>(std::calloc(a.num_experts + 1, sizeof(int64_t)));
    token = static_cast<int32_t*>(std::malloc(sizeof(int32_t) * (pairs + 1)));
    weight = static_cast<float*>(std::malloc(sizeof(float) * (pairs + 1)));
    for (int64_t p = 0; p < pairs; ++p) ++start[a.topk_ids[p] + 1];
    for (int64_t e = 0; e < a.num_experts; ++e) {
      max_count = start[e + 1] > max_count ? start[e + 1] : max_count;
      start[e + 1] += start[e];
    }
    int64_t* next = static_cast<int64_t*>(std::malloc(sizeof(int64_t) * (a.num_experts + 1)));
    std::memcpy(next, start, sizeof(int64_t) * (a.num_experts + 1));
    for (int64_t p = 0; p < pairs; ++p) {  // stable: tokens in order within an expert
      const int64_t slot = next[a.topk_ids[p]]++;
      token[slot] = int32_t(p / a.topk);
      weight[slot] = a.topk_weights[p];
    }
    std::free(next);
  }
  ~Routing() {
    std::free(start);
    std::free(token);
    std::free(weight);
  }
  Routing(const Routing&) = delete;
  Routing& operator=(const Routing&) = delete;
};

template <typename T>
T* alloc(int64_t count) {
  return static_cast<T*>(std::malloc(sizeof(T) * (count > 0 ? count : 1)));
}

template <int kAct>
void run_moe(const MoeArgs& a) {
  const int64_t h = a.hidden, n = a.inter;
  const Routing route(a);
  const int64_t rows_max = route.max_count;
  Input* xs = alloc<Input>(rows_max * h);      // an expert's gathered input rows
  bf16_t* hidden = alloc<bf16_t>(rows_max * n);  // act(gate) * up, as the model rounds it
  Input* down_in = PanelKernel::kWidensInput ? alloc<Input>(rows_max * n)
                                             : reinterpret_cast<Input*>(hidden);
  bf16_t* y = alloc<bf16_t>(rows_max * h);       // the expert's output rows
  float* acc = static_cast<float*>(std::calloc(a.m * h > 0 ? a.m * h : 1, sizeof(float)));
  const int64_t gate_pairs = (n + kPanel - 1) / kPanel, down_panels = (h + kPanel - 1) / kPanel;
  const int64_t gate_panel_elems = h / 2 * kPanel, down_panel_elems = n / 2 * kPanel;
  const uint32_t* w13 = static_cast<const uint32_t*>(a.w13);
  const uint32_t* w2 = static_cast<const uint32_t*>(a.w2);
  // panel_rows reads k (the reduction length) from its LinearArgs
  LinearArgs gate_args{}, down_args{};
  gate_args.k = h;
  down_args.k = n;
  const bf16_t* input = static_cast<const bf16_t*>(a.input);
  bf16_t* out = static_cast<bf16_t*>(a.out);
#pragma omp parallel if (a.m * a.topk * h * n >= kParallelMinElements)
  {
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t j0 = gate_pairs * t / threads, j1 = gate_pairs * (t + 1) / threads;
    const int64_t p0 = down_panels * t / threads, p1 = down_panels * (t + 1) / threads;
    alignas(64) bf16_t gate[kRowChunk * kPanel];
    for (int64_t e = 0; e < a.num_experts; ++e) {
      const int64_t count = route.start[e + 1] - route.start[e];
      if (count == 0) continue;
      const int32_t* rows = route.token + route.start[e];
      const float* weight = route.weight + route.start[e];
      const uint32_t* expert_w13 = w13 + e * 2 * gate_pairs * gate_panel_elems;
      const uint32_t* expert_w2 = w2 + e * down_panels * down_panel_elems;
      gather_rows(input, a.input_row_stride, rows, count, h, xs);
#pragma omp barrier
      const KernelInput x{xs, h};
      for (int64_t m0 = 0; m0 < count; m0 += kRowChunk) {
        const int64_t m1 = m0 + kRowChunk < count ? m0 + kRowChunk : count;
        for (int64_t j = j0; j < j1; ++j) {
          const uint32_t* gate_panel = expert_w13 + 2 * j * gate_panel_elems;
          const uint32_t* up_panel = gate_panel + gate_panel_elems;
          const char* next = j + 1 < j1 ? reinterpret_cast<const char*>(up_panel + gate_panel_elems)
                                        : nullptr;
          const int cols = int(n - j * kPanel < kPanel ? n - j * kPanel : kPanel);
          panel_rows<kPlain>(gate_args, x, m0, m1, gate_panel,
                             reinterpret_cast<const char*>(up_panel), cols, nullptr, gate, kPanel,
                             nullptr);
          panel_rows<kAct>(gate_args, x, m0, m1, up_panel, next, cols, nullptr,
                           hidden + m0 * n + j * kPanel, n, gate);
        }
      }
#pragma omp barrier
      if constexpr (PanelKernel::kWidensInput) {
        gather_rows(hidden, n, nullptr, count, n, down_in);
#pragma omp barrier
      }
      const KernelInput hx{down_in, n};
      for (int64_t m0 = 0; m0 < count; m0 += kRowChunk) {
        const int64_t m1 = m0 + kRowChunk < count ? m0 + kRowChunk : count;
        for (int64_t p = p0; p < p1; ++p) {
          const uint32_t* panel = expert_w2 + p * down_panel_elems;
          const char* next = p + 1 < p1 ? reinterpret_cast<const char*>(panel + down_panel_elems)
                                        : nullptr;
          const int cols = int(h - p * kPanel < kPanel ? h - p * kPanel : kPanel);
          panel_rows<kPlain>(down_args, hx, m0, m1, panel, next, cols, nullptr,
                             y + m0 * h + p * kPanel, h, nullptr);
          accumulate(acc + p * kPanel, h, rows + m0, weight + m0, y + m0 * h + p * kPanel, h,
                     m1 - m0, cols);
        }
      }
      // the next expert overwrites `hidden` (and `down_in`), still read here
#pragma omp barrier
    }
    constexpr int W = FloatVec::kWidth;
    for (int64_t r = a.m * t / threads; r < a.m * (t + 1) / threads; ++r) {
      const float* src = acc + r * h;
      bf16_t* dst = out + r * a.out_row_stride;
      int64_t c = 0;
      for (; c + W <= h; c += W) FloatVec::load(src + c).store(dst + c);
      if (c < h) store_tail(load_tail(src + c, int(h - c)), dst + c, int(h - c));
    }
  }
  std::free(xs);
  std::free(hidden);
  if (PanelKernel::kWidensInput) std::free(down_in);
  std::free(y);
  std::free(acc);
}

}  // namespace

void packed_moe(const MoeArgs& args, Activation kind) {
  with_gated_activation(kind, [&](auto act) { run_moe<decltype(act)::value>(args); });
}
#endif  // elsewhere the kernel table holds null and the Python path runs

}  // namespace vllm::cpu::VLLM_ISA_NS
