// packed_linear's micro-kernel for CPUs without AVX512-BF16 (AVX2 + FMA, and
// AVX-512 builds whose compiler lacks BF16): the same packed bf16 weight,
// computed with fp32 FMAs. Included by packed_linear.cpp only.
//
// Widening costs one integer op per 8 weights, thanks to the pair layout:
// a 32-bit lane holds (w[k], w[k+1]) of one column, so w[k] as fp32 is the
// lane shifted left by 16 and w[k+1] the lane with its low half cleared.
// x is widened to fp32 once per call (the driver's scratch), so a broadcast
// is one load.
//
// Blocking (16 ymm registers): up to 6 rows x 16 columns = 12 accumulators,
// 2 widened weight vectors and 1 broadcast; per k pair 4 weight loads,
// 12 broadcasts, 4 shifts/ands and 24 FMAs, so the FMA ports, not loads,
// set the pace. Blocks of 4-6 rows run as assembly
// (packed_panel_avx2_asm.h); smaller ones, the intrinsics below. A
// 48-column panel is three such 16-column passes (each reads one cache line
// of every 3 a k pair occupies; the panel stays in L2 between them). One row (batch-1 decode, bandwidth-bound) takes the whole
// panel in one pass instead, so the weights stream strictly in order.
#pragma once

#include "activation_math.h"
#include "packed_panel_avx2_asm.h"
#include "vec.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

struct PanelKernel {
  using Input = float;  // the driver widens x's bf16 rows first
  static constexpr bool kWidensInput = true;
  static constexpr int kBlockRows = 6;

  // acc[r][v] += x[r] . columns [8v, 8v + 8) of a sub-panel over k pair kp,
  // `wp` pointing at the sub-panel's first column in that k pair.
  template <int R, int V>
  __attribute__((always_inline)) static void kpair_step(const float* const (&xr)[R], int64_t kp,
                                                        const __m256i* wp, __m256 (&acc)[R][V]) {
    const __m256i high = _mm256_set1_epi32(int(0xffff0000u));
    __m256 wv[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v)
      wv[v] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_loadu_si256(wp + v), 16));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(xr[r] + 2 * kp);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(a, wv[v], acc[r][v]);
    }
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v)
      wv[v] = _mm256_castsi256_ps(_mm256_and_si256(_mm256_loadu_si256(wp + v), high));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(xr[r] + 2 * kp + 1);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(a, wv[v], acc[r][v]);
    }
  }

  // acc[r][v] += x[r] . columns [8v, 8v + 8) of a sub-panel, `w` pointing
  // at its first column in k pair 0 (k pairs kPackedLinearPanel words apart);
  // prefetches `per_step` lines of `prefetch` a k pair while there are any
  // (into L2, prefetcht1: the next panel is 55 KiB ahead, one row's stream
  // 24 KiB, more than L1 holds; a one-row stream prefetched into L1 that far ahead ran at
  // 0.72-0.84 of the read bandwidth, into L2 at 0.85-0.96), then runs
  // branch-free, one k pair an iteration: unrolled by two, GCC interleaved
  // the pairs and spilled accumulators to the stack in the 6-row block
  // (1 thread: 77-81 GFLOP/s; one pair an iteration, no spills: 103-110,
  // ~95% of the FMA peak). Inlined into run (always_inline): as a call, the
  // accumulators would live in memory behind the reference (measured: 68
  // instead of 127 GFLOP/s).
  template <int R, int V>
  __attribute__((always_inline)) static void accumulate(const float* x, int64_t x_stride,
                                                        const uint32_t* w, int64_t kpairs,
                                                        __m256 (&acc)[R][V], const char* prefetch,
                                                        int64_t prefetch_lines, int per_step) {
    constexpr int64_t kStride = kPackedLinearPanel / 8;  // __m256i per k pair
    const float* xr[R];  // row pointers hoisted: the broadcasts address [row + 8 kp]
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) xr[r] = x + r * x_stride;
    const __m256i* wp = reinterpret_cast<const __m256i*>(w);
    int64_t kp = 0;
    if (prefetch != nullptr) {
      for (; kp < kpairs && kp * per_step < prefetch_lines; ++kp) {
        for (int i = 0; i < per_step; ++i) {
          const int64_t line = kp * per_step + i;
          if (line < prefetch_lines) __builtin_prefetch(prefetch + line * 64, 0, 2);
        }
        kpair_step<R, V>(xr, kp, wp + kp * kStride, acc);
      }
    }
#pragma GCC unroll 1
    for (; kp < kpairs; ++kp) kpair_step<R, V>(xr, kp, wp + kp * kStride, acc);
  }

  // Writes columns [c0, c0 + 8V) of rows [0, R) (those below `cols`):
  // acc + bias, or act(gate) * that for a gated epilogue (kAct >= 0), with
  // the roundings the AVX-512 kernel and the two separate ops make.
  template <int R, int V, int kAct>
  static void store(const __m256 (&acc)[R][V], int c0, bf16_t* out, int64_t out_stride, int cols,
                    const bf16_t* bias, const bf16_t* gate) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const int c = c0 + 8 * v, lanes = cols - c;
      if (lanes <= 0) continue;
      const bool full = lanes >= 8;
      const FloatVec b = bias == nullptr ? FloatVec(0.0f)
                         : full          ? FloatVec::load(bias + c)
                                         : load_tail(bias + c, lanes);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        FloatVec y = FloatVec(acc[r][v]) + b;
        if constexpr (kAct >= 0) {
          const FloatVec g = FloatVec::load(gate + r * kPackedLinearPanel + c);  // full panels only
          y = round_to<bf16_t>(apply_activation<Activation(kAct)>(g)) * round_to<bf16_t>(y);
        }
        if (full) {
          y.store(out + r * out_stride + c);
        } else {
          store_tail(y, out + r * out_stride + c, lanes);
        }
      }
    }
  }

  // out[r][0:cols] = x[r] . panel (+ bias) for R rows (or the gated
  // epilogue, gate rows kPackedLinearPanel apart); `prefetch`: the next
  // panel's lines [0, prefetch_lines), `per_step` of them per k pair.
  template <int R, int kAct>
  static void run(const float* x, int64_t x_stride, const uint32_t* panel, int64_t kpairs,
                  bf16_t* out, int64_t out_stride, int cols, const bf16_t* bias,
                  const bf16_t* gate, const char* prefetch, int64_t prefetch_lines,
                  int per_step) {
    if constexpr (R == 1) {
      constexpr int V = int(kPackedLinearPanel) / 8;
      __m256 acc[1][V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[0][v] = _mm256_setzero_ps();
      accumulate<1, V>(x, x_stride, panel, kpairs, acc, prefetch, prefetch_lines, per_step);
      store<1, V, kAct>(acc, 0, out, out_stride, cols, bias, gate);
    } else {
      constexpr int kSub = 16;  // columns per pass
      constexpr int kPasses = int(kPackedLinearPanel) / kSub;
      // The next panel's prefetches, spread over the passes: pass j takes
      // the j-th stretch of its lines at a third of the rate (all of them in
      // one pass overran the outstanding-miss slots: 4-row calls streamed
      // at 10-15 GB/s).
      const int pass_step = (per_step + kPasses - 1) / kPasses;
      for (int c0 = 0; c0 < cols; c0 += kSub) {
        __m256 acc[R][2];
        const int64_t first = int64_t(c0 / kSub) * kpairs * pass_step;
        const bool prefetching = prefetch != nullptr && first < prefetch_lines;
        if constexpr (R >= 4 && R <= 6) {
          if (pass_step == 1) {  // always so: per_step <= kLinesPerPair (3) = kPasses
            __m256 block[6][2];
            block_rx16<R>(x, x_stride, panel + c0, kpairs,
                          prefetching ? prefetch + first * 64 : nullptr,
                          prefetching ? prefetch_lines - first : 0, block);
            store<R, 2, kAct>(reinterpret_cast<const __m256(&)[R][2]>(block), c0, out,
                              out_stride, cols, bias, gate);
            continue;
          }
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        accumulate<R, 2>(x, x_stride, panel + c0, kpairs, acc,
                         prefetching ? prefetch + first * 64 : nullptr, prefetch_lines - first,
                         pass_step);
        store<R, 2, kAct>(acc, c0, out, out_stride, cols, bias, gate);
      }
    }
  }
};

}  // namespace
}  // namespace vllm::cpu::VLLM_ISA_NS
