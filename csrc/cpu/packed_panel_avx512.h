// packed_linear's micro-kernel on AVX512-BF16: vdpbf16ps straight on the
// packed (k, k+1) pairs. Included by packed_linear.cpp only.
//
// Up to 8 rows x 48 columns = 24 fp32 accumulators in registers; per k pair
// 3 weight loads, 8 broadcasts of x's pairs and 24 dot products, nothing
// else (95-99% of the bf16 peak on hot weights, bench/RESULTS.md session 7).
#pragma once

#include "activation_math.h"
#include "vec.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

struct PanelKernel {
  // x as the caller passed it: bf16 rows.
  using Input = bf16_t;
  static constexpr bool kWidensInput = false;
  static constexpr int kBlockRows = 8;
  static constexpr int kVecs = int(kPackedLinearPanel) / 16;  // 16-column vectors per panel

  static uint32_t load_pair(const bf16_t* p) {
    uint32_t v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  // Lanes of vector v that hold one of the panel's `cols` real columns.
  static __mmask16 column_mask(int cols, int v) {
    const int lanes = cols - 16 * v;
    return lanes >= 16 ? __mmask16(0xffff) : lanes <= 0 ? __mmask16(0) : __mmask16((1u << lanes) - 1);
  }
  static __m512 widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  // y rounded to bf16 and back, as storing it and loading it again would.
  static FloatVec round_bf16(__m512 y) {
    return FloatVec(widen_bf16(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(y))));
  }

  // out[r][0:cols] = x[r] . panel (+ bias) for R rows; for a gated epilogue
  // (kAct >= 0, the up panel of a gate/up pair) out[r] = act(gate[r]) *
  // that, with gate rows kPackedLinearPanel apart. `prefetch`: the next
  // panel's lines [0, prefetch_lines), `per_step` of them per k pair.
  template <int R, int kAct>
  static void run(const bf16_t* x, int64_t x_stride, const uint32_t* panel, int64_t kpairs,
                  bf16_t* out, int64_t out_stride, int cols, const bf16_t* bias,
                  const bf16_t* gate, const char* prefetch, int64_t prefetch_lines,
                  int per_step) {
    constexpr int kPanel = int(kPackedLinearPanel);
    __m512 acc[R][kVecs];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[r][v] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < kpairs; ++kp) {
      if (prefetch != nullptr) {
        for (int i = 0; i < per_step; ++i) {
          const int64_t line = kp * per_step + i;
          if (line >= prefetch_lines) continue;
          // One row streams the weights once: into L2, as the AVX2 kernel
          // does (into L1 the layers' 1-row GEMVs ran at 71-83% of the read
          // bandwidth, into L2 at 95-100%; session 19), the stream itself
          // kOneRowPrefetchAhead ahead (packed_driver.h).
          // Several rows reread the panel per row block: L1, as measured.
          if constexpr (R == 1) {
            __builtin_prefetch(prefetch + line * 64, 0, 2);
          } else {
            __builtin_prefetch(prefetch + line * 64, 0, 3);
          }
        }
      }
      const uint32_t* w = panel + kp * kPanel;
      __m512bh b[kVecs];
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) b[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(w + 16 * v));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512bh a =
            reinterpret_cast<__m512bh>(_mm512_set1_epi32(int(load_pair(x + r * x_stride + 2 * kp))));
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
        if constexpr (kAct >= 0) {
          const FloatVec g(widen_bf16(_mm256_maskz_loadu_epi16(mask, gate + r * kPanel + 16 * v)));
          y = (round_bf16(apply_activation<Activation(kAct)>(g).v) * round_bf16(y)).v;
        }
        _mm256_mask_storeu_epi16(out + r * out_stride + 16 * v, mask,
                                 reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(y)));
      }
    }
  }
};

}  // namespace
}  // namespace vllm::cpu::VLLM_ISA_NS
