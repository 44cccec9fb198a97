// quant_linear: y = x W^T on weights kept in 4 or 8 bits (GGUF, AWQ, GPTQ
// repacked once at load; the arithmetic and layout are in kernel_table.h,
// QuantLinearArgs).
//
// llama.cpp's way, not dequantize-then-GEMM: x is quantized to int8 per
// 32-block once per call, and every weight byte meets it in an integer dot
// product (vpdpbusd on AVX512-VNNI: 64 multiply-adds an instruction, twice
// vdpbf16ps's; vpmaddubsw + vpmaddwd on AVX2), scaled to fp32 once per
// block. Decode streams 0.6 bytes a weight (4-bit, group 32) instead of
// bf16's 2, and the 4-bit unpacking is two ANDs and a shift per 128 values.
//
// The layout puts column c of a 16-column line in 32-bit lane c with 4
// consecutive k values: one vpdpbusd against x's 4 bytes broadcast adds
// those 4 products into every column's lane, no horizontal sums anywhere.
// A thread owns a contiguous run of 48-column panels (one stream of
// weights); rows go by in register blocks (AVX-512: 4 rows x 48 columns,
// AVX2: 2 rows x 16 columns, or 1 row x 48).
#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "dispatch.h"
#include "packed_driver.h"

namespace vllm::cpu::VLLM_ISA_NS {

#if !defined(VLLM_ISA_AVX512) || defined(__AVX512VNNI__)
namespace {

constexpr int64_t kQPanel = kQuantPanel;
constexpr int64_t kBlock = kQuantActBlock;
constexpr int64_t kQRowChunk = 256;  // rows per pass over a thread's panels (x's int8 rows in L2)

// 8-bit weights on AVX-512 meet x as unsigned bytes (xq + 128, vpdpbusd's
// unsigned operand) with the weight as the signed one; the 128 * sum(w)
// this adds is taken off per flush block.
#if defined(VLLM_ISA_AVX512)
constexpr bool kFlipX8 = true;
#else
constexpr bool kFlipX8 = false;
#endif

// x quantized: q [m][k] int8 (xor 0x80 where kFlipX8 and 8-bit), dx
// [m][k / 32] block scales, gsum [m][k / group] the groups' dequantized sums.
struct QuantizedRows {
  int8_t* q;
  float* dx;
  float* gsum;
  int64_t k, blocks, groups;
};

int64_t group_bytes(int64_t group, int bits) {
  return kQuantHeaderBytes + kQPanel * group * bits / 8;
}

// 32 scaled values (|v| <= 127) rounded to nearest-even int8 (xor 0x80 with
// `flip`), and the integer sums of each half of 16.
inline void round_block(const float* v, bool flip, int8_t* q, int32_t* half_sums) {
#if defined(VLLM_ISA_AVX512)
  for (int h = 0; h < 2; ++h) {
    const __m512i i = _mm512_cvtps_epi32(_mm512_loadu_ps(v + 16 * h));  // nearest-even, as rint
    __m128i bytes = _mm512_cvtepi32_epi8(i);
    if (flip) bytes = _mm_xor_si128(bytes, _mm_set1_epi8(char(0x80)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * h), bytes);
    half_sums[h] = _mm512_reduce_add_epi32(i);
  }
#elif defined(VLLM_ISA_AVX2)
  __m256i i[4];
  for (int j = 0; j < 4; ++j) i[j] = _mm256_cvtps_epi32(_mm256_loadu_ps(v + 8 * j));
  // packs work per 128-bit lane: words then bytes, then the dwords back in order
  const __m256i words01 = _mm256_packs_epi32(i[0], i[1]), words23 = _mm256_packs_epi32(i[2], i[3]);
  __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words01, words23),
                                              _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  if (flip) bytes = _mm256_xor_si256(bytes, _mm256_set1_epi8(char(0x80)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), bytes);
  for (int h = 0; h < 2; ++h) {
    const __m256i sum8 = _mm256_add_epi32(i[2 * h], i[2 * h + 1]);
    const __m128i sum4 = _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
    const __m128i sum2 = _mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, 0x4e));
    half_sums[h] = _mm_cvtsi128_si32(_mm_add_epi32(sum2, _mm_shuffle_epi32(sum2, 0xb1)));
  }
#else
  half_sums[0] = half_sums[1] = 0;
  for (int i = 0; i < kBlock; ++i) {
    const int32_t xi = int32_t(__builtin_rintf(v[i]));
    half_sums[i / 16] += xi;
    q[i] = int8_t(flip ? (xi ^ 0x80) : xi);
  }
#endif
}

template <typename T>
void quantize_row(const T* x, int64_t k, int64_t group, bool flip, int8_t* q, float* dx,
                  float* gsum) {
  constexpr int W = FloatVec::kWidth;
  alignas(64) float v[kBlock];
  int32_t half_sums[2];
  for (int64_t b = 0; b < k / kBlock; ++b) {
    FloatVec vmax(0.f);
    for (int i = 0; i < kBlock; i += W) {
      const FloatVec xv = FloatVec::load(x + b * kBlock + i);
      vmax = FloatVec::max(vmax, FloatVec::max(xv, FloatVec(0.f) - xv));
      xv.store(v + i);
    }
    const float amax = vmax.reduce_max();
    const float d = amax / 127.f;
    const float id = amax > 0.f ? 127.f / amax : 0.f;
    for (int i = 0; i < kBlock; i += W) (FloatVec::load(v + i) * FloatVec(id)).store(v + i);
    round_block(v, flip, q + b * kBlock, half_sums);
    dx[b] = d;
    // the groups' dequantized sums: per 16 (group 16) or accumulated over
    // the group's 32-blocks, in k order
    if (group == 16) {
      gsum[2 * b] = d * float(half_sums[0]);
      gsum[2 * b + 1] = d * float(half_sums[1]);
    } else {
      const int64_t g = b * kBlock / group;
      const float part = d * float(half_sums[0] + half_sums[1]);
      gsum[g] = (b * kBlock) % group == 0 ? part : gsum[g] + part;
    }
  }
}

template <typename T>
struct QuantizeRows {
  static void run(const QuantLinearArgs& a, const QuantizedRows& x, bool flip) {
    const T* in = static_cast<const T*>(a.input);
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    for (int64_t r = a.m * t / threads; r < a.m * (t + 1) / threads; ++r)
      quantize_row(in + r * a.input_row_stride, a.k, a.group_size, flip, x.q + r * a.k,
                   x.dx + r * x.blocks, x.gsum + r * x.groups);
  }
};

void quantize_rows(const QuantLinearArgs& a, const QuantizedRows& x, bool flip) {
  switch (a.dtype) {
    case DType::kFloat32: QuantizeRows<float>::run(a, x, flip); break;
    case DType::kBFloat16: QuantizeRows<bf16_t>::run(a, x, flip); break;
    case DType::kFloat16: QuantizeRows<fp16_t>::run(a, x, flip); break;
  }
}

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline float half_to_float(const uint8_t* p) {
  fp16_t h;
  std::memcpy(&h, p, sizeof(h));
  return to_float(h);
}

// Row results of one panel, [rows][kQPanel] fp32, to out (+ bias).
template <typename T>
void store_rows(const float* acc, int rows, const QuantLinearArgs& a, int64_t row0, int64_t col0,
                int cols) {
  constexpr int W = FloatVec::kWidth;
  T* out = static_cast<T*>(a.out);
  const T* bias = a.bias == nullptr ? nullptr : static_cast<const T*>(a.bias) + col0;
  for (int r = 0; r < rows; ++r) {
    T* o = out + (row0 + r) * a.out_row_stride + col0;
    const float* y = acc + r * kQPanel;
    int c = 0;
    for (; c + W <= cols; c += W) {
      FloatVec v = FloatVec::load(y + c);
      if (bias != nullptr) v = v + FloatVec::load(bias + c);
      v.store(o + c);
    }
    if (c < cols) {
      FloatVec v = load_tail(y + c, cols - c);
      if (bias != nullptr) v = v + load_tail(bias + c, cols - c);
      store_tail(v, o + c, cols - c);
    }
  }
}

void store_panel(const float* acc, int rows, const QuantLinearArgs& a, int64_t row0,
                 int64_t col0, int cols) {
  switch (a.dtype) {
    case DType::kFloat32: store_rows<float>(acc, rows, a, row0, col0, cols); break;
    case DType::kBFloat16: store_rows<bf16_t>(acc, rows, a, row0, col0, cols); break;
    case DType::kFloat16: store_rows<fp16_t>(acc, rows, a, row0, col0, cols); break;
  }
}

#if defined(VLLM_ISA_AVX512)
// R rows x 48 columns: 3 x R int32 block sums and 3 x R fp32 accumulators.
constexpr int kMaxRows = 4;

template <int R, int kBits, int kFlush>
void quant_rows(const QuantizedRows& x, int64_t row0, const uint8_t* panel, int64_t group,
                float* acc_out) {
  const int64_t gbytes = group_bytes(group, kBits);
  constexpr int64_t fsize = kFlush;
  constexpr int64_t kStep = kBits == 4 ? 8 : 4;  // k values per line
  const __m512i low = _mm512_set1_epi8(0x0f), ones = _mm512_set1_epi8(1);
  const int8_t* xr[R];
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) xr[r] = x.q + (row0 + r) * x.k;
  __m512 acc[R][3];
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 8
    for (int v = 0; v < 3; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t g = 0; g < x.groups; ++g) {
    const uint8_t* head = panel + g * gbytes;
    const uint8_t* data = head + kQuantHeaderBytes;
    for (int64_t f0 = 0; f0 < group; f0 += fsize) {
      __m512i isum[R][3], wsum[3];
      #pragma GCC unroll 8
      for (int v = 0; v < 3; ++v) {
        wsum[v] = _mm512_setzero_si512();
        #pragma GCC unroll 8
        for (int r = 0; r < R; ++r) isum[r][v] = _mm512_setzero_si512();
      }
      const int64_t k0 = g * group + f0;
#pragma GCC unroll 8
      for (int64_t s = 0; s < fsize / kStep; ++s) {
        const int64_t kk = k0 + s * kStep;
        const uint8_t* line = data + (f0 / kStep + s) * 3 * 64;
        #pragma GCC unroll 8
        for (int v = 0; v < 3; ++v) {
          const __m512i raw = _mm512_loadu_si512(line + 64 * v);
          if constexpr (kBits == 4) {
            const __m512i lo = _mm512_and_si512(raw, low);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
            #pragma GCC unroll 8
            for (int r = 0; r < R; ++r) {
              isum[r][v] = _mm512_dpbusd_epi32(isum[r][v], lo, _mm512_set1_epi32(load_i32(xr[r] + kk)));
              isum[r][v] = _mm512_dpbusd_epi32(isum[r][v], hi, _mm512_set1_epi32(load_i32(xr[r] + kk + 4)));
            }
          } else {
            wsum[v] = _mm512_dpbusd_epi32(wsum[v], ones, raw);
            #pragma GCC unroll 8
            for (int r = 0; r < R; ++r)
              isum[r][v] = _mm512_dpbusd_epi32(isum[r][v], _mm512_set1_epi32(load_i32(xr[r] + kk)), raw);
          }
        }
      }
      #pragma GCC unroll 8
      for (int v = 0; v < 3; ++v) {
        const __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(head + 32 * v)));
        const __m512i bias128 = _mm512_slli_epi32(wsum[v], 7);
        #pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m512i dot = kBits == 8 ? _mm512_sub_epi32(isum[r][v], bias128) : isum[r][v];
          const __m512 sd = _mm512_mul_ps(scale, _mm512_set1_ps(x.dx[(row0 + r) * x.blocks + k0 / kBlock]));
          acc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sd, acc[r][v]);
        }
      }
    }
    #pragma GCC unroll 8
    for (int v = 0; v < 3; ++v) {
      const __m512 off = _mm512_cvtph_ps(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(head + 2 * kQPanel + 32 * v)));
      #pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
        acc[r][v] = _mm512_fmadd_ps(off, _mm512_set1_ps(x.gsum[(row0 + r) * x.groups + g]), acc[r][v]);
    }
  }
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 8
    for (int v = 0; v < 3; ++v) _mm512_storeu_ps(acc_out + r * kQPanel + 16 * v, acc[r][v]);
}

template <int kBits, int kFlush>
void panel_block(int rows, const QuantizedRows& x, int64_t row0, const uint8_t* panel,
                 int64_t group, float* acc) {
  switch (rows) {
    case 1: quant_rows<1, kBits, kFlush>(x, row0, panel, group, acc); break;
    case 2: quant_rows<2, kBits, kFlush>(x, row0, panel, group, acc); break;
    case 3: quant_rows<3, kBits, kFlush>(x, row0, panel, group, acc); break;
    default: quant_rows<4, kBits, kFlush>(x, row0, panel, group, acc); break;
  }
}

#elif defined(VLLM_ISA_AVX2)
// Columns [8 j0, 8 (j0 + V)) of a panel for R rows (R x V <= 6). 4-bit
// products gather in int16 over a flush block (at most 8 pairs of 2 x 15 x
// 127: 30480, below int16's limit) before widening; 8-bit ones go through
// the sign trick (|w| unsigned, x with w's sign), each pair at most 2 x 128
// x 127 = 32512, and widen at once.
constexpr int kMaxRows = 2;

template <int R, int V, int kBits, int kFlush>
void columns_rows(const QuantizedRows& x, int64_t row0, const uint8_t* panel, int64_t group,
                  int j0, float* acc_out) {
  const int64_t gbytes = group_bytes(group, kBits);
  constexpr int64_t fsize = kFlush;
  constexpr int64_t kStep = kBits == 4 ? 8 : 4;
  const __m256i low = _mm256_set1_epi8(0x0f), ones16 = _mm256_set1_epi16(1);
  const int8_t* xr[R];
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) xr[r] = x.q + (row0 + r) * x.k;
  // byte offset of 8-column vector j in a step's 3 lines
  int64_t off[V];
  #pragma GCC unroll 8
  for (int v = 0; v < V; ++v) off[v] = (j0 + v) / 2 * 64 + (j0 + v) % 2 * 32;
  __m256 acc[R][V];
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t g = 0; g < x.groups; ++g) {
    const uint8_t* head = panel + g * gbytes;
    const uint8_t* data = head + kQuantHeaderBytes;
    for (int64_t f0 = 0; f0 < group; f0 += fsize) {
      __m256i isum[R][V];
      #pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
        #pragma GCC unroll 8
        for (int v = 0; v < V; ++v) isum[r][v] = _mm256_setzero_si256();
      const int64_t k0 = g * group + f0;
#pragma GCC unroll 8
      for (int64_t s = 0; s < fsize / kStep; ++s) {
        const int64_t kk = k0 + s * kStep;
        const uint8_t* line = data + (f0 / kStep + s) * 3 * 64;
        #pragma GCC unroll 8
        for (int v = 0; v < V; ++v) {
          const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(line + off[v]));
          if constexpr (kBits == 4) {
            const __m256i lo = _mm256_and_si256(raw, low);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
            #pragma GCC unroll 8
            for (int r = 0; r < R; ++r) {
              const __m256i p = _mm256_add_epi16(
                  _mm256_maddubs_epi16(lo, _mm256_set1_epi32(load_i32(xr[r] + kk))),
                  _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load_i32(xr[r] + kk + 4))));
              isum[r][v] = _mm256_add_epi16(isum[r][v], p);
            }
          } else {
            const __m256i mag = _mm256_abs_epi8(raw);
            #pragma GCC unroll 8
            for (int r = 0; r < R; ++r) {
              const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(load_i32(xr[r] + kk)), raw);
              isum[r][v] = _mm256_add_epi32(
                  isum[r][v], _mm256_madd_epi16(_mm256_maddubs_epi16(mag, xs), ones16));
            }
          }
        }
      }
      #pragma GCC unroll 8
      for (int v = 0; v < V; ++v) {
        const __m256 scale = _mm256_cvtph_ps(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(head + 16 * (j0 + v))));
        #pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m256i dot = kBits == 4 ? _mm256_madd_epi16(isum[r][v], ones16) : isum[r][v];
          const __m256 sd = _mm256_mul_ps(scale, _mm256_set1_ps(x.dx[(row0 + r) * x.blocks + k0 / kBlock]));
          acc[r][v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), sd, acc[r][v]);
        }
      }
    }
    #pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const __m256 offv = _mm256_cvtph_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(head + 2 * kQPanel + 16 * (j0 + v))));
      #pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
        acc[r][v] = _mm256_fmadd_ps(offv, _mm256_set1_ps(x.gsum[(row0 + r) * x.groups + g]), acc[r][v]);
    }
  }
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(acc_out + r * kQPanel + 8 * (j0 + v), acc[r][v]);
}

template <int kBits, int kFlush>
void panel_block(int rows, const QuantizedRows& x, int64_t row0, const uint8_t* panel,
                 int64_t group, float* acc) {
  if (rows == 1) {
    // one row (decode): the whole panel in one pass, weights in stream order
    columns_rows<1, 6, kBits, kFlush>(x, row0, panel, group, 0, acc);
  } else {
    for (int j0 = 0; j0 < 6; j0 += 2)
      columns_rows<2, 2, kBits, kFlush>(x, row0, panel, group, j0, acc);
  }
}

#else
// Portable C++: the same integer sums and fp32 steps, one column at a time.
constexpr int kMaxRows = 1;

template <int kBits, int kFlush>
void panel_block(int rows, const QuantizedRows& x, int64_t row0, const uint8_t* panel,
                 int64_t group, float* acc) {
  (void)rows;
  const int64_t gbytes = group_bytes(group, kBits);
  constexpr int64_t fsize = kFlush;
  constexpr int64_t kStep = kBits == 4 ? 8 : 4;
  const int8_t* xq = x.q + row0 * x.k;
  for (int c = 0; c < kQPanel; ++c) {
    const int64_t line = c / 16 * 64, lane = c % 16 * 4;
    float a = 0.f;
    for (int64_t g = 0; g < x.groups; ++g) {
      const uint8_t* head = panel + g * gbytes;
      const uint8_t* data = head + kQuantHeaderBytes;
      for (int64_t f0 = 0; f0 < group; f0 += fsize) {
        int32_t dot = 0;
        for (int64_t i = f0; i < f0 + fsize; ++i) {
          const uint8_t* bytes = data + i / kStep * 3 * 64 + line + lane;
          int32_t w;
          if constexpr (kBits == 4) {
            const int j = int(i % 8);
            w = j < 4 ? bytes[j] & 0x0f : bytes[j - 4] >> 4;
          } else {
            w = int8_t(bytes[i % 4]);
          }
          dot += w * int32_t(xq[g * group + i]);
        }
        const float sd = half_to_float(head + 2 * c) * x.dx[row0 * x.blocks + (g * group + f0) / kBlock];
        a = __builtin_fmaf(float(dot), sd, a);
      }
      a = __builtin_fmaf(half_to_float(head + 2 * kQPanel + 2 * c), x.gsum[row0 * x.groups + g], a);
    }
    acc[c] = a;
  }
}
#endif

#if defined(VLLM_HAS_PANEL_KERNEL)
// Bit offsets (first, second) of each k pair within a line's 32-bit lane,
// in k order: 4-bit lanes hold k0..k0+3 in their bytes' low nibbles and
// k0+4..k0+7 in the high ones; 8-bit lanes k0..k0+3 in their bytes.
constexpr int kPairLo4[4] = {0, 16, 4, 20}, kPairHi4[4] = {8, 24, 12, 28};
constexpr int kPairLo8[2] = {0, 16}, kPairHi8[2] = {8, 24};

// Above args.int8_max_rows rows, bf16 activations take the dequantizing
// path: each thread expands a panel once into packed_linear's bf16 pair
// panel (w = s u + b in fp32, rounded to bf16: the bits a dense bf16 copy of
// the weight holds) and runs packed_linear's micro-kernel over every row:
// exactly what the dense bf16 model computes (x is not rounded to int8),
// at bf16 GEMM speed plus one expansion per panel per call. Callers pass 0
// for steps that hold a prompt (its first token is not left to int8 noise).

#if defined(VLLM_ISA_AVX512)
// Lane c of the result: (bf16(first[c]), bf16(second[c])). One conversion
// of both to 32 bf16 (first's in the low half), then one word shuffle.
inline __m512i bf16_pairs(__m512 first, __m512 second) {
  const __m512i both = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(second, first));
  const __m512i interleave = _mm512_set_epi16(
      31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
      23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, both);
}

// A 16-column line's k values at bit offsets `lo` and `hi` of each lane as
// one row of bf16 pairs.
template <int kBits>
inline __m512i line_pair(__m512i u, int lo, int hi, __m512 scale, __m512 off) {
  __m512i a, b;
  if constexpr (kBits == 4) {
    const __m512i mask = _mm512_set1_epi32(15);
    a = _mm512_and_si512(_mm512_srlv_epi32(u, _mm512_set1_epi32(lo)), mask);
    b = _mm512_and_si512(_mm512_srlv_epi32(u, _mm512_set1_epi32(hi)), mask);
  } else {
    a = _mm512_srai_epi32(_mm512_sllv_epi32(u, _mm512_set1_epi32(24 - lo)), 24);
    b = _mm512_srai_epi32(_mm512_sllv_epi32(u, _mm512_set1_epi32(24 - hi)), 24);
  }
  // fma: s u is exact (an fp16 scale times an 8-bit value), so this rounds
  // once, as s * u + b does
  return bf16_pairs(_mm512_fmadd_ps(_mm512_cvtepi32_ps(a), scale, off),
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(b), scale, off));
}

template <int kBits>
void dequantize_panel(const uint8_t* panel, int64_t k, int64_t group, uint32_t* out) {
  constexpr int64_t kStep = kBits == 4 ? 8 : 4;
  constexpr int kPairs = int(kStep / 2);
  const int64_t gbytes = group_bytes(group, kBits);
  for (int64_t g = 0; g < k / group; ++g) {
    const uint8_t* head = panel + g * gbytes;
    const uint8_t* data = head + kQuantHeaderBytes;
    __m512 scale[3], off[3];
    for (int v = 0; v < 3; ++v) {
      scale[v] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(head + 32 * v)));
      off[v] = _mm512_cvtph_ps(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(head + 2 * kQPanel + 32 * v)));
    }
    for (int64_t s = 0; s < group / kStep; ++s) {
      const int64_t pair0 = (g * group + s * kStep) / 2;
      for (int v = 0; v < 3; ++v) {
        const __m512i u = _mm512_loadu_si512(data + (s * 3 + v) * 64);
        for (int i = 0; i < kPairs; ++i) {
          const int lo = kBits == 4 ? kPairLo4[i] : kPairLo8[i];
          const int hi = kBits == 4 ? kPairHi4[i] : kPairHi8[i];
          _mm512_storeu_si512(out + (pair0 + i) * kQPanel + 16 * v,
                              line_pair<kBits>(u, lo, hi, scale[v], off[v]));
        }
      }
    }
  }
}
#else  // AVX2: 8-column halves; bf16 rounded by hand (round to nearest even)
inline __m256i bf16_bits(__m256 x) {
  const __m256i bits = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  return _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
}

template <int kBits>
inline __m256i half_line_pair(__m256i u, int lo, int hi, __m256 scale, __m256 off) {
  __m256i a, b;
  if constexpr (kBits == 4) {
    const __m256i mask = _mm256_set1_epi32(15);
    a = _mm256_and_si256(_mm256_srlv_epi32(u, _mm256_set1_epi32(lo)), mask);
    b = _mm256_and_si256(_mm256_srlv_epi32(u, _mm256_set1_epi32(hi)), mask);
  } else {
    a = _mm256_srai_epi32(_mm256_sllv_epi32(u, _mm256_set1_epi32(24 - lo)), 24);
    b = _mm256_srai_epi32(_mm256_sllv_epi32(u, _mm256_set1_epi32(24 - hi)), 24);
  }
  const __m256i first = bf16_bits(_mm256_fmadd_ps(_mm256_cvtepi32_ps(a), scale, off));
  const __m256i second = bf16_bits(_mm256_fmadd_ps(_mm256_cvtepi32_ps(b), scale, off));
  return _mm256_or_si256(_mm256_srli_epi32(first, 16),
                         _mm256_and_si256(second, _mm256_set1_epi32(int(0xffff0000u))));
}

template <int kBits>
void dequantize_panel(const uint8_t* panel, int64_t k, int64_t group, uint32_t* out) {
  constexpr int64_t kStep = kBits == 4 ? 8 : 4;
  constexpr int kPairs = int(kStep / 2);
  const int64_t gbytes = group_bytes(group, kBits);
  for (int64_t g = 0; g < k / group; ++g) {
    const uint8_t* head = panel + g * gbytes;
    const uint8_t* data = head + kQuantHeaderBytes;
    for (int64_t s = 0; s < group / kStep; ++s) {
      const int64_t pair0 = (g * group + s * kStep) / 2;
      for (int j = 0; j < 6; ++j) {  // 8-column vectors
        const __m256 scale = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(head + 16 * j)));
        const __m256 off = _mm256_cvtph_ps(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(head + 2 * kQPanel + 16 * j)));
        const __m256i u = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(data + s * 3 * 64 + j / 2 * 64 + j % 2 * 32));
        for (int i = 0; i < kPairs; ++i) {
          const int lo = kBits == 4 ? kPairLo4[i] : kPairLo8[i];
          const int hi = kBits == 4 ? kPairHi4[i] : kPairHi8[i];
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (pair0 + i) * kQPanel + 8 * j),
                              half_line_pair<kBits>(u, lo, hi, scale, off));
        }
      }
    }
  }
}
#endif

template <int kBits>
void run_dequantized(const QuantLinearArgs& a) {
  const LinearArgs la{a.out, a.input, nullptr, a.bias, a.m, a.n, a.k,
                      a.input_row_stride, a.out_row_stride, DType::kBFloat16};
  const int64_t panels = (a.n + kQPanel - 1) / kQPanel;
  const int64_t gbytes = group_bytes(a.group_size, kBits), groups = a.k / a.group_size;
  const bf16_t* bias = static_cast<const bf16_t*>(a.bias);
  bf16_t* out = static_cast<bf16_t*>(a.out);
  InputScratch scratch(la);
#pragma omp parallel
  {
    const KernelInput x = kernel_input(la, scratch.data);
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t p0 = panels * t / threads, p1 = panels * (t + 1) / threads;
    uint32_t* expanded = static_cast<uint32_t*>(std::malloc(sizeof(uint32_t) * a.k / 2 * kQPanel));
    for (int64_t p = p0; p < p1; ++p) {
      dequantize_panel<kBits>(a.weight + p * groups * gbytes, a.k, a.group_size, expanded);
      const int cols = int(a.n - p * kQPanel < kQPanel ? a.n - p * kQPanel : kQPanel);
      for (int64_t m0 = 0; m0 < a.m; m0 += kRowChunk) {
        const int64_t m1 = m0 + kRowChunk < a.m ? m0 + kRowChunk : a.m;
        panel_rows<kPlain>(la, x, m0, m1, expanded, nullptr, cols,
                           bias == nullptr ? nullptr : bias + p * kQPanel,
                           out + m0 * a.out_row_stride + p * kQPanel, a.out_row_stride, nullptr);
      }
    }
    std::free(expanded);
  }
}
#endif  // VLLM_HAS_PANEL_KERNEL

template <int kBits, int kFlush>
void run(const QuantLinearArgs& a) {
  const int64_t panels = (a.n + kQPanel - 1) / kQPanel;
  const int64_t gbytes = group_bytes(a.group_size, kBits);
  const int64_t groups = a.k / a.group_size, blocks = a.k / kBlock;
  QuantizedRows x{static_cast<int8_t*>(std::malloc(size_t(a.m * a.k))),
                  static_cast<float*>(std::malloc(sizeof(float) * a.m * blocks)),
                  static_cast<float*>(std::malloc(sizeof(float) * a.m * groups)), a.k, blocks,
                  groups};
  const bool flip = kFlipX8 && kBits == 8;
#pragma omp parallel if (a.m * a.n * a.k >= kParallelMinElements)
  {
    quantize_rows(a, x, flip);
#pragma omp barrier
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t p0 = panels * t / threads, p1 = panels * (t + 1) / threads;
    alignas(64) float acc[kMaxRows * kQPanel];
    for (int64_t m0 = 0; m0 < a.m; m0 += kQRowChunk) {
      const int64_t m1 = m0 + kQRowChunk < a.m ? m0 + kQRowChunk : a.m;
      for (int64_t p = p0; p < p1; ++p) {
        const uint8_t* panel = a.weight + p * groups * gbytes;
        const int cols = int(a.n - p * kQPanel < kQPanel ? a.n - p * kQPanel : kQPanel);
        for (int64_t r0 = m0; r0 < m1; r0 += kMaxRows) {
          const int rows = int(m1 - r0 < kMaxRows ? m1 - r0 : kMaxRows);
          panel_block<kBits, kFlush>(rows, x, r0, panel, a.group_size, acc);
          store_panel(acc, rows, a, r0, p * kQPanel, cols);
        }
      }
    }
  }
  std::free(x.q);
  std::free(x.dx);
  std::free(x.gsum);
}

}  // namespace

void quant_linear(const QuantLinearArgs& args) {
#if defined(VLLM_HAS_PANEL_KERNEL)
  if (args.dtype == DType::kBFloat16 && args.m > args.int8_max_rows) {
    args.bits == 4 ? run_dequantized<4>(args) : run_dequantized<8>(args);
    return;
  }
#endif
  // flush blocks of 16 k (group 16) or 32, fixed at compile time so the
  // block's steps unroll
  const bool sixteen = args.group_size == 16;
  if (args.bits == 4) {
    sixteen ? run<4, 16>(args) : run<4, 32>(args);
  } else {
    sixteen ? run<8, 16>(args) : run<8, 32>(args);
  }
}
#endif

}  // namespace vllm::cpu::VLLM_ISA_NS
