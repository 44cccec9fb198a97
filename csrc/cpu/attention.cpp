// Paged attention on CPU: decode (v1, and v2 with context partitions) and
// prefill / chunked prefill, all reading K/V straight from the paged cache
// [num_blocks, num_kv_heads, block_size, head_size].
//
// One routine, attend(), does the work for a tile of query rows that share
// a KV head: the G query heads of a GQA group, times a few query tokens for
// prefill. It walks the sequence's blocks once, converting each block of K
// and V to fp32 a single time for all rows of the tile, with an online
// softmax (running max and sum per row) updated once per span of blocks
// (kSpan positions), so nothing of size context_len is stored. The key
// block is [head_size, block_size]: a block's scores for one row are
// head_size FMAs of a broadcast query element against a row of block_size
// tokens, with no horizontal sums.
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "dispatch.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

constexpr int W = FloatVec::kWidth;
// Query rows per tile (query heads of one KV head x query tokens): at least
// a whole GQA group. 72 fits 8 tokens of SmolLM2's 9 query heads, i.e. 24
// rows per KV head, three full 8-row kernel calls a block; 64 fitted 7
// tokens (8 + 8 + 5 rows): 512-token prefill attention 4.5% slower.
constexpr int kMaxRows = 72;
static_assert(kMaxRows >= kAttentionMaxGroup, "a decode tile holds a whole group");
constexpr int kMaxBlockSize = int(kAttentionMaxBlockSize);
// Context positions whose scores are taken together: a row's softmax update
// (two horizontal reductions, maybe a rescale of its output) is paid once
// per span instead of once per block. A multiple of every block size; 128
// keeps a prefill tile's scores (64 rows) in L1: 512 measured slower. Decode
// over 64 x 256 tokens: 221-227 us instead of 247-255 (prefill unchanged).
constexpr int kSpan = 128;
static_assert(kSpan % kMaxBlockSize == 0, "a span holds whole blocks");
// Floats between rows of scores: padded off a power of two, so rows do not
// all land in the same L1 sets.
constexpr int kLogitsStride = kSpan + 16;
constexpr int64_t kMaxHeadSize = kAttentionMaxHeadSize;
constexpr float kNegInf = -__builtin_huge_valf();

// acc += p * v over n floats.
inline void axpy(float* acc, float p, const float* v, int64_t n) {
  const FloatVec pv(p);
  int64_t i = 0;
  for (; i + W <= n; i += W) FloatVec::fma(pv, FloatVec::load(v + i), FloatVec::load(acc + i)).store(acc + i);
  if (i < n) {
    const int t = int(n - i);
    store_tail(FloatVec::fma(pv, load_tail(v + i, t), load_tail(acc + i, t)), acc + i, t);
  }
}

inline void scale_row(float* x, float s, int64_t n) {
  const FloatVec sv(s);
  int64_t i = 0;
  for (; i + W <= n; i += W) (FloatVec::load(x + i) * sv).store(x + i);
  for (; i < n; ++i) x[i] *= s;
}

template <typename T>
inline void to_float_row(float* dst, const T* src, int64_t n) {
  int64_t i = 0;
  for (; i + W <= n; i += W) FloatVec::load(src + i).store(dst + i);
  if (i < n) store_tail(load_tail(src + i, int(n - i)), dst + i, int(n - i));
}

template <typename T>
inline void from_float_row(T* dst, const float* src, float s, int64_t n) {
  const FloatVec sv(s);
  int64_t i = 0;
  for (; i + W <= n; i += W) (FloatVec::load(src + i) * sv).store(dst + i);
  if (i < n) store_tail(load_tail(src + i, int(n - i)) * sv, dst + i, int(n - i));
}

// A tile of query rows of one sequence over KV heads [h0, h0 + heads). Rows
// are ordered [KV head][query token][g], so each KV head's rows are adjacent;
// covering several KV heads makes each block's reads one contiguous span.
struct Tile {
  int64_t h0, heads;
  int rows_per_head;     // query tokens x G
  const float* q;        // rows x head_size, already multiplied by scale
  const uint32_t* qpairs;  // bf16 caches: the unscaled query as bf16 pairs
  uint32_t* ppairs;        // bf16 caches: scratch for the weights as bf16 pairs
  const int64_t* limit;  // per row: context positions [0, limit) are visible
  const float* slope;    // per row ALiBi slope, or null
  float* m;              // per row running max
  float* l;              // per row running sum of exp
  float* acc;            // rows x head_size, unnormalised output
  int rows() const { return int(heads) * rows_per_head; }
};

// Software prefetch, into L2, of the page-sized chunk of K or V this thread
// reads next, a few lines per iteration of a kernel's loop. Decode reads its
// KV from DRAM in 4 KiB head chunks scattered over the cache, where the
// hardware prefetcher stops at every page boundary: one thread reached ~11
// GB/s of a ~35 GB/s machine. Spread over the loop (not issued as a burst,
// which stalls on full miss queues) and into L2 (prefetcht1; into L1 it
// measured no faster than none), the next chunk streams in while this one is
// computed on: a 30-layer 64 x 222-token decode step 16.1 -> 11.8 ms.
class ChunkPrefetch {
 public:
  ChunkPrefetch(const void* chunk, int64_t bytes, int64_t iterations)
      : p_(static_cast<const char*>(chunk)),
        lines_(chunk == nullptr ? 0 : bytes / 64),
        per_(iterations > 0 ? (lines_ + iterations - 1) / iterations : lines_) {}
  // Call once per loop iteration.
  void step() {
    for (int64_t i = 0; i < per_ && next_ < lines_; ++i, ++next_) __builtin_prefetch(p_ + next_ * 64, 0, 2);
  }

 private:
  const char* p_;
  int64_t lines_, per_, next_ = 0;
};

// Scores of NR rows against one block's keys, read straight from the cache
// (k: [hs][bs] of T, converted in registers):
// out[r][j] = sum_d q[r][d] * k[d][j]. NR rows and two halves of d give
// independent FMA chains; each key vector is loaded once for all NR rows.
template <int NR, int64_t kHs, typename T>
inline void block_scores(const float* q, int64_t hs_rt, const T* k, int64_t bs, float* out,
                         int64_t out_stride, const T* next) {
  const int64_t hs = kHs ? kHs : hs_rt;
  if (bs % W == 0) {
    // Fast path, whole vectors only: the accumulators stay in registers.
    ChunkPrefetch prefetch(next, bs * hs * int64_t(sizeof(T)), (bs / W) * (hs / 2));
    for (int64_t j = 0; j < bs; j += W) {
      FloatVec acc[NR][2];
      for (int64_t d = 0; d + 1 < hs; d += 2) {
        prefetch.step();
        const FloatVec k0 = FloatVec::load(k + d * bs + j);
        const FloatVec k1 = FloatVec::load(k + (d + 1) * bs + j);
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) {
          acc[r][0] = FloatVec::fma(FloatVec(q[r * hs + d]), k0, acc[r][0]);
          acc[r][1] = FloatVec::fma(FloatVec(q[r * hs + d + 1]), k1, acc[r][1]);
        }
      }
      if (hs % 2) {
        const FloatVec k0 = FloatVec::load(k + (hs - 1) * bs + j);
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r)
          acc[r][0] = FloatVec::fma(FloatVec(q[r * hs + hs - 1]), k0, acc[r][0]);
      }
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) (acc[r][0] + acc[r][1]).store(out + r * out_stride + j);
    }
    return;
  }
  // Block sizes that are not a multiple of the vector width.
  for (int r = 0; r < NR; ++r) {
    for (int64_t j = 0; j < bs; ++j) {
      float sum = 0.f;
      for (int64_t d = 0; d < hs; ++d) sum += q[r * hs + d] * to_float(k[d * bs + j]);
      out[r * out_stride + j] = sum;
    }
  }
}

#if defined(VLLM_ISA_AVX512) && defined(__AVX512BF16__)
// bf16 caches on AVX512-BF16 CPUs: vdpbf16ps does 32 multiply-adds per
// instruction on raw bf16 pairs, twice an fp32 FMA's work, and the FMA units
// bound this kernel once the data is in cache. Pairs run along the reduced
// dimension, so two rows of the block are interleaved with one permute.
#define VLLM_BF16_DOT 1
alignas(64) constexpr uint16_t kInterleave[32] = {  // lane 2i <- a[i], 2i+1 <- b[i]
    0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
    8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};

inline __m512bh interleave_rows(const bf16_t* a, const bf16_t* b, __m512i idx) {
  const __m512i lo = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
  const __m512i hi = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
  return reinterpret_cast<__m512bh>(_mm512_permutex2var_epi16(lo, idx, hi));
}

inline __m512bh broadcast_pair(uint32_t pair) {
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(int(pair)));
}

// Scores of NR rows (qpairs: each row's bf16 query as (d, d+1) pairs,
// unscaled) against a block's keys [hs][bs]; scale applied at the end.
// Needs bs % 16 == 0 and an even head size. `next`: the chunk (bs x hs) to
// prefetch meanwhile, or null.
template <int NR>
inline void block_scores_bf16(const uint32_t* qpairs, int64_t hs, const bf16_t* k, int64_t bs,
                              float scale, float* out, int64_t out_stride, const bf16_t* next) {
  const __m512i idx = _mm512_load_si512(kInterleave);
  const int64_t pairs = hs / 2;
  ChunkPrefetch prefetch(next, bs * hs * 2, (bs / 16) * (pairs / 2));
  for (int64_t j = 0; j < bs; j += 16) {
    __m512 acc0[NR], acc1[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
    for (int64_t dp = 0; dp + 1 < pairs; dp += 2) {
      prefetch.step();
      const __m512bh k0 = interleave_rows(k + 2 * dp * bs + j, k + (2 * dp + 1) * bs + j, idx);
      const __m512bh k1 = interleave_rows(k + (2 * dp + 2) * bs + j, k + (2 * dp + 3) * bs + j, idx);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) {
        acc0[r] = _mm512_dpbf16_ps(acc0[r], broadcast_pair(qpairs[r * pairs + dp]), k0);
        acc1[r] = _mm512_dpbf16_ps(acc1[r], broadcast_pair(qpairs[r * pairs + dp + 1]), k1);
      }
    }
    if (pairs % 2) {
      const int64_t dp = pairs - 1;
      const __m512bh k0 = interleave_rows(k + 2 * dp * bs + j, k + (2 * dp + 1) * bs + j, idx);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r)
        acc0[r] = _mm512_dpbf16_ps(acc0[r], broadcast_pair(qpairs[r * pairs + dp]), k0);
    }
    const __m512 sv = _mm512_set1_ps(scale);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r)
      _mm512_storeu_ps(out + r * out_stride + j, _mm512_mul_ps(_mm512_add_ps(acc0[r], acc1[r]), sv));
  }
}

// acc[r] += sum_j p[r][j] v[j] over a whole block (bs even, every row of it
// visible: pairs of rows are read together) with the weights rounded to
// bf16 (relative error 2^-9, below the bf16 output's own rounding).
// `next`: the chunk (bs x kHs) to prefetch meanwhile, or null.
template <int NR, int64_t kHs>
inline void block_values_bf16(float* acc, const float* p, int64_t p_stride, const bf16_t* v,
                              int64_t bs, uint32_t* ppairs, const bf16_t* next) {
  constexpr int64_t nv = kHs / 16;
  const __m512i idx = _mm512_load_si512(kInterleave);
  const int64_t jpairs = bs / 2;
  for (int r = 0; r < NR; ++r) {  // weights as bf16 (j, j+1) pairs
    for (int64_t j = 0; j < bs; j += 16) {
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(p + r * p_stride + j));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ppairs + r * jpairs + j / 2),
                          reinterpret_cast<__m256i>(h));
    }
  }
  // Two output vectors per pass: NR x 2 accumulators plus NR broadcasts fit
  // the 32 registers (NR x 4 at head size 64 did not: GCC spilled two
  // accumulators to the stack inside the loop).
  constexpr int64_t kPass = nv < 2 ? nv : 2;
  ChunkPrefetch prefetch(next, bs * kHs * 2, (nv / kPass) * jpairs);
  for (int64_t c0 = 0; c0 < nv; c0 += kPass) {
    __m512 a[NR][kPass];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r)
#pragma GCC unroll 2
      for (int64_t c = 0; c < kPass; ++c) a[r][c] = _mm512_loadu_ps(acc + r * kHs + (c0 + c) * 16);
    for (int64_t jp = 0; jp < jpairs; ++jp) {
      prefetch.step();
#pragma GCC unroll 2
      for (int64_t c = 0; c < kPass; ++c) {
        const int64_t col = (c0 + c) * 16;
        const __m512bh vv = interleave_rows(v + 2 * jp * kHs + col, v + (2 * jp + 1) * kHs + col, idx);
#pragma GCC unroll 8
        for (int r = 0; r < NR; ++r) a[r][c] = _mm512_dpbf16_ps(a[r][c], broadcast_pair(ppairs[r * jpairs + jp]), vv);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r)
#pragma GCC unroll 2
      for (int64_t c = 0; c < kPass; ++c) _mm512_storeu_ps(acc + r * kHs + (c0 + c) * 16, a[r][c]);
  }
}

// Rows per call: every call interleaves the block's bf16 pairs once (one
// permute per 32 elements) for all its rows, so the more rows per call the
// less permuting per multiply-add; a decode tile has G rows per KV head (3 for
// SmolLM2), a prefill tile tokens x G. Bounded by the 32 zmm registers: two
// accumulators per row (score rows: two halves of the head; value rows: two
// output vectors per pass) and a broadcast per value row.
constexpr int kScoreRows = 8;
constexpr int kValueRows = 8;

inline void scores_bf16_rows(int n, const uint32_t* qpairs, int64_t hs, const bf16_t* k,
                             int64_t bs, float scale, float* out, const bf16_t* next) {
  switch (n) {
    case 8: block_scores_bf16<8>(qpairs, hs, k, bs, scale, out, kLogitsStride, next); break;
    case 7: block_scores_bf16<7>(qpairs, hs, k, bs, scale, out, kLogitsStride, next); break;
    case 6: block_scores_bf16<6>(qpairs, hs, k, bs, scale, out, kLogitsStride, next); break;
    case 5: block_scores_bf16<5>(qpairs, hs, k, bs, scale, out, kLogitsStride, next); break;
    case 4: block_scores_bf16<4>(qpairs, hs, k, bs, scale, out, kLogitsStride, next); break;
    case 3: block_scores_bf16<3>(qpairs, hs, k, bs, scale, out, kLogitsStride, next); break;
    case 2: block_scores_bf16<2>(qpairs, hs, k, bs, scale, out, kLogitsStride, next); break;
    default: block_scores_bf16<1>(qpairs, hs, k, bs, scale, out, kLogitsStride, next); break;
  }
}

template <int64_t kHs>
inline void values_bf16_rows(int n, float* acc, const float* p, const bf16_t* v, int64_t bs,
                             uint32_t* ppairs, const bf16_t* next) {
  switch (n) {
    case 8: block_values_bf16<8, kHs>(acc, p, kLogitsStride, v, bs, ppairs, next); break;
    case 7: block_values_bf16<7, kHs>(acc, p, kLogitsStride, v, bs, ppairs, next); break;
    case 6: block_values_bf16<6, kHs>(acc, p, kLogitsStride, v, bs, ppairs, next); break;
    case 5: block_values_bf16<5, kHs>(acc, p, kLogitsStride, v, bs, ppairs, next); break;
    case 4: block_values_bf16<4, kHs>(acc, p, kLogitsStride, v, bs, ppairs, next); break;
    case 3: block_values_bf16<3, kHs>(acc, p, kLogitsStride, v, bs, ppairs, next); break;
    case 2: block_values_bf16<2, kHs>(acc, p, kLogitsStride, v, bs, ppairs, next); break;
    default: block_values_bf16<1, kHs>(acc, p, kLogitsStride, v, bs, ppairs, next); break;
  }
}
#endif

// Accumulator registers block_values uses: 16 of AVX-512's 32, 12 of
// AVX2's 16 (the rest hold the value vector and a broadcast).
constexpr int64_t kValueAccRegs = W == 16 ? 16 : 12;

// Output vectors per pass over a block's values (head size kHs): the whole
// row where two rows' accumulators fit, else slices of 4 vectors (AVX2 at
// head size 64: 8 vectors a row, 4 a pass), so that several rows still
// share each value vector loaded and widened.
template <int64_t kHs>
constexpr int64_t value_pass_vecs() {
  constexpr int64_t nv = kHs / W;
  return kValueAccRegs / (nv > 0 ? nv : 1) >= 2 || nv % 4 != 0 ? nv : 4;
}

// Rows per call of block_values, for a head size of kHs: as many as their
// accumulators (rows x value_pass_vecs) fit, up to 4.
template <int64_t kHs>
constexpr int value_rows() {
  constexpr int64_t pass = value_pass_vecs<kHs>();
  constexpr int64_t fit = pass > 0 ? kValueAccRegs / pass : 1;
  return fit >= 4 ? 4 : (fit >= 1 ? int(fit) : 1);
}

// acc[r] += sum_{j in [lo, hi)} p[r][j] * v[j] for NR rows; v: the block's
// values [bs][hs] of T, read straight from the cache, a pass per
// value_pass_vecs columns. Only rows [lo, hi) are read: the rest of the
// block may hold stale data, even NaNs.
template <int NR, int64_t kHs, typename T>
inline void block_values(float* acc, const float* p, int64_t p_stride, const T* v, int64_t lo,
                         int64_t hi, int64_t bs, const T* next) {
  constexpr int64_t nv = kHs / W;
  constexpr int64_t pass = value_pass_vecs<kHs>();
  ChunkPrefetch prefetch(next, bs * kHs * int64_t(sizeof(T)), hi - lo);
  for (int64_t c0 = 0; c0 < nv; c0 += pass) {
    FloatVec a[NR][pass];
    for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
      for (int64_t c = 0; c < pass; ++c) a[r][c] = FloatVec::load(acc + r * kHs + (c0 + c) * W);
    for (int64_t j = lo; j < hi; ++j) {
      if (c0 == 0) prefetch.step();
#pragma GCC unroll 16
      for (int64_t c = 0; c < pass; ++c) {
        const FloatVec vc = FloatVec::load(v + j * kHs + (c0 + c) * W);
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) a[r][c] = FloatVec::fma(FloatVec(p[r * p_stride + j]), vc, a[r][c]);
      }
    }
    for (int r = 0; r < NR; ++r)
#pragma GCC unroll 16
      for (int64_t c = 0; c < pass; ++c) a[r][c].store(acc + r * kHs + (c0 + c) * W);
  }
}

// block_values for n rows (1 <= n <= value_rows<kHs>()).
template <int64_t kHs, typename T>
inline void values_rows(int n, float* acc, const float* p, const T* v, int64_t lo, int64_t hi,
                        int64_t bs, const T* next) {
  constexpr int kMax = value_rows<kHs>();
  switch (n) {
    case 4: if constexpr (kMax >= 4) block_values<4, kHs>(acc, p, kLogitsStride, v, lo, hi, bs, next); break;
    case 3: if constexpr (kMax >= 3) block_values<3, kHs>(acc, p, kLogitsStride, v, lo, hi, bs, next); break;
    case 2: if constexpr (kMax >= 2) block_values<2, kHs>(acc, p, kLogitsStride, v, lo, hi, bs, next); break;
    default: block_values<1, kHs>(acc, p, kLogitsStride, v, lo, hi, bs, next); break;
  }
}

// block_scores for n rows (1 <= n <= 4): a GQA group's rows share each key
// vector loaded (and converted) once.
template <int64_t kHs, typename T>
inline void scores_rows(int n, const float* q, int64_t hs, const T* k, int64_t bs, float* out,
                        const T* next) {
  switch (n) {
    case 4: block_scores<4, kHs>(q, hs, k, bs, out, kLogitsStride, next); break;
    case 3: block_scores<3, kHs>(q, hs, k, bs, out, kLogitsStride, next); break;
    case 2: block_scores<2, kHs>(q, hs, k, bs, out, kLogitsStride, next); break;
    default: block_scores<1, kHs>(q, hs, k, bs, out, kLogitsStride, next); break;
  }
}

// Any head size: one value row at a time through an fp32 copy.
template <typename T>
inline void block_values_any(float* acc, int64_t hs, const float* p, const T* v, int64_t lo,
                             int64_t hi, float* row) {
  for (int64_t j = lo; j < hi; ++j) {
    if (p[j] == 0.f) continue;
    to_float_row(row, v + j * hs, hs);
    axpy(acc, p[j], row, hs);
  }
}

// e^x for x <= 0 (scores minus their running max; -inf on masked lanes),
// for caches of 16-bit types, whose outputs keep 2^-9 (bf16) or 2^-11
// (fp16): 2^(x log2 e) = 2^n 2^f, |f| <= 1/2, 2^f by a degree-4 fit
// (relative error 2.7e-6, plus up to 6e-8 |x| from rounding x log2 e; 0
// below the float range).
// 9 vector operations to exp()'s 15; the exp is about half of the softmax,
// and the softmax a sixth of prefill attention.
inline FloatVec exp_nonpositive(FloatVec x) {
  // Below -104, 2^n underflows to exactly 0, as e^x does: masked lanes too.
  const FloatVec t = FloatVec::max(x, FloatVec(-104.0f)) * FloatVec(1.44269504088896341f);
  const FloatVec n = t.round();
  const FloatVec f = t - n;
  FloatVec p(0.009570101276040077f);
  p = FloatVec::fma(p, f, FloatVec(0.05591786280274391f));
  p = FloatVec::fma(p, f, FloatVec(0.240247443318367f));
  p = FloatVec::fma(p, f, FloatVec(0.6931217908859253f));
  p = FloatVec::fma(p, f, FloatVec(0.9999992847442627f));
  return FloatVec::ldexp(p, n);
}

// Turns one row's scores over n positions into weights p = exp(s - new max)
// in place and updates the row's running max, sum and output scale. Only
// [lo, row_hi) is visible: the whole vectors outside it are zeroed without
// an exp, and the masked lanes of the edge vectors are set to -inf, whose exp
// is exactly 0. Returns false when nothing was visible.
template <bool kFastExp>
inline bool softmax_update(float* row, int64_t n, int64_t lo, int64_t row_hi, float slope,
                           bool alibi, int64_t alibi_base, float& m, float& l, float* acc,
                           int64_t hs) {
  if (lo >= row_hi) return false;
  if (alibi) {
    for (int64_t j = lo; j < row_hi; ++j) row[j] += slope * float(alibi_base + j);
  }
  const int64_t vlo = lo - lo % W;  // the vectors holding visible lanes
  const int64_t vhi = (row_hi + W - 1) / W * W < n ? (row_hi + W - 1) / W * W : n;
  for (int64_t j = 0; j < vlo; ++j) row[j] = 0.f;
  for (int64_t j = vhi; j < n; ++j) row[j] = 0.f;
  for (int64_t j = vlo; j < lo; ++j) row[j] = kNegInf;
  for (int64_t j = row_hi; j < vhi; ++j) row[j] = kNegInf;
  FloatVec vmax(kNegInf);
  int64_t j = vlo;
  for (; j + W <= vhi; j += W) vmax = FloatVec::max(vmax, FloatVec::load(row + j));
  float block_max = vmax.reduce_max();
  for (; j < vhi; ++j) block_max = row[j] > block_max ? row[j] : block_max;
  const float new_max = block_max > m ? block_max : m;
  const FloatVec shift(new_max);
  FloatVec sum;
  for (j = vlo; j + W <= vhi; j += W) {
    const FloatVec x = FloatVec::load(row + j) - shift;
    const FloatVec p = kFastExp ? exp_nonpositive(x) : exp(x);
    p.store(row + j);
    sum = sum + p;
  }
  float total = 0.f;
  if (j < vhi) {  // n is not a multiple of the vector width
    const int t = int(vhi - j);
    const FloatVec x = load_tail(row + j, t) - shift;
    store_tail(kFastExp ? exp_nonpositive(x) : exp(x), row + j, t);
    for (int64_t k = j; k < vhi; ++k) total += row[k];
  }
  total += sum.reduce_add();
  if (new_max > m) {
    const float correction = __builtin_expf(m - new_max);
    if (l != 0.f) scale_row(acc, correction, hs);
    l *= correction;
    m = new_max;
  }
  l += total;
  return true;
}

// Online-softmax attention of `tile` over context positions [begin, end),
// a span of whole blocks at a time: every block's scores for every row,
// then one softmax update per row, then the values.
template <typename T, int64_t kHs>
void attend(const PagedAttentionArgs& a, const T* k_cache, const T* v_cache,
            const int32_t* block_table, int64_t seq_len, int64_t begin, int64_t end,
            Tile& tile, float* row_buf, float* logits) {
  const int64_t hs = kHs ? kHs : a.head_size;
  const int64_t bs = a.block_size;
  const int rows = tile.rows();
  for (int r = 0; r < rows; ++r) {
    tile.m[r] = kNegInf;
    tile.l[r] = 0.f;
    for (int64_t i = 0; i < hs; ++i) tile.acc[r * hs + i] = 0.f;
  }
  int64_t visible_end = 0;
  for (int r = 0; r < rows; ++r) visible_end = tile.limit[r] > visible_end ? tile.limit[r] : visible_end;
  if (visible_end < end) end = visible_end;
  const int64_t span_cols = kSpan - kSpan % bs;
  // Blocks sit anywhere in the cache: touch the first line of each of a
  // block's head chunks one block ahead, so the hardware prefetcher starts
  // early on every chunk (the block kernels also spread prefetches of all
  // of the next chunk's lines over their loops, ChunkPrefetch; all of a
  // block's lines at once, here, measured slower: the prefetches stall).
  auto prefetch_block = [&](const T* cache, int64_t pos) {
    if (pos >= end) return;
    const int64_t next = (block_table[pos / bs] * a.num_kv_heads + tile.h0) * bs * hs;
    for (int64_t hl = 0; hl < tile.heads; ++hl) __builtin_prefetch(cache + next + hl * bs * hs);
  };
  // Head (h0 + hl)'s chunk of the block holding context position pos, or
  // null past the end: what the block kernels prefetch while they work.
  auto head_chunk = [&](const T* cache, int64_t pos, int64_t hl) -> const T* {
    if (pos >= end) return nullptr;
    return cache + (block_table[pos / bs] * a.num_kv_heads + tile.h0 + hl) * bs * hs;
  };
  for (int64_t span = begin - begin % bs; span < end; span += span_cols) {
    const int64_t span_end = span + span_cols < end ? span + span_cols : end;
    const int64_t lo = (span > begin ? span : begin) - span;  // visible columns [lo, hi)
    const int64_t hi = span_end - span;
    const int64_t cols = (hi + bs - 1) / bs * bs;
    for (int64_t b = 0; b < cols; b += bs) {
      const int64_t block = block_table[(span + b) / bs];
      prefetch_block(k_cache, span + b + bs);
      for (int64_t hl = 0; hl < tile.heads; ++hl) {
        const int64_t base = (block * a.num_kv_heads + tile.h0 + hl) * bs * hs;
        const int r0 = int(hl) * tile.rows_per_head, r1 = r0 + tile.rows_per_head;
        int r = r0;
        // Reading order: this head's keys block by block, then the span's
        // values from its first block. Only a head's first call prefetches.
        const T* next = b + bs < cols ? head_chunk(k_cache, span + b + bs, hl)
                                      : head_chunk(v_cache, span, hl);
#ifdef VLLM_BF16_DOT
        if constexpr (std::is_same_v<T, bf16_t>) {
          if (bs % 16 == 0 && hs % 2 == 0) {
            const int64_t pairs = hs / 2;
            while (r < r1) {
              const int n = r1 - r < kScoreRows ? r1 - r : kScoreRows;
              scores_bf16_rows(n, tile.qpairs + r * pairs, hs, k_cache + base, bs, a.scale,
                               logits + r * kLogitsStride + b, r == r0 ? next : nullptr);
              r += n;
            }
          }
        }
#endif
        while (r < r1) {
          const int n = r1 - r < 4 ? r1 - r : 4;
          scores_rows<kHs>(n, tile.q + r * hs, hs, k_cache + base, bs,
                           logits + r * kLogitsStride + b, r == r0 ? next : nullptr);
          r += n;
        }
      }
    }
    prefetch_block(v_cache, span);
    for (int r = 0; r < rows; ++r) {
      const int64_t row_hi = tile.limit[r] - span < hi ? tile.limit[r] - span : hi;
      const float slope = tile.slope ? tile.slope[r] : 0.f;
      if (!softmax_update<sizeof(T) == 2>(logits + r * kLogitsStride, cols, lo, row_hi, slope,
                          tile.slope != nullptr, span - seq_len + 1, tile.m[r], tile.l[r],
                          tile.acc + r * hs, hs)) {
        for (int64_t j = 0; j < cols; ++j) logits[r * kLogitsStride + j] = 0.f;
      }
    }
    for (int64_t b = 0; b < cols; b += bs) {
      const int64_t block = block_table[(span + b) / bs];
      prefetch_block(v_cache, span + b + bs);
      const int64_t blo = lo > b ? lo - b : 0;  // visible rows of this block
      const int64_t bhi = hi - b < bs ? hi - b : bs;
      for (int64_t hl = 0; hl < tile.heads; ++hl) {
        const int64_t base = (block * a.num_kv_heads + tile.h0 + hl) * bs * hs;
        const int r0 = int(hl) * tile.rows_per_head, r1 = r0 + tile.rows_per_head;
        const float* p = logits + b;
        int r = r0;
        // Then the next span's keys.
        const T* next = head_chunk(b + bs < cols ? v_cache : k_cache, span + b + bs, hl);
#ifdef VLLM_BF16_DOT
        if constexpr (std::is_same_v<T, bf16_t> && kHs != 0 && kHs % 16 == 0) {
          if (blo == 0 && bhi == bs && bs % 16 == 0) {
            while (r < r1) {
              const int n = r1 - r < kValueRows ? r1 - r : kValueRows;
              values_bf16_rows<kHs>(n, tile.acc + r * kHs, p + r * kLogitsStride,
                                    v_cache + base, bs, tile.ppairs, r == r0 ? next : nullptr);
              r += n;
            }
          }
        }
#endif
        if constexpr (kHs != 0 && kHs % W == 0) {
          constexpr int NR = value_rows<kHs>();
          while (r < r1) {
            const int n = r1 - r < NR ? r1 - r : NR;
            values_rows<kHs>(n, tile.acc + r * kHs, p + r * kLogitsStride, v_cache + base, blo,
                             bhi, bs, r == r0 ? next : nullptr);
            r += n;
          }
        } else {
          for (r = r0; r < r1; ++r)
            block_values_any(tile.acc + r * hs, hs, p + r * kLogitsStride, v_cache + base, blo, bhi,
                             row_buf);
        }
      }
    }
  }
}

// Per-thread scratch (heap: ~210 KB would crowd an OpenMP thread's stack):
// the tile's state and one fp32 value row.
struct Scratch {
  float q[kMaxRows * kMaxHeadSize];
  float acc[kMaxRows * kMaxHeadSize];
  float logits[kMaxRows * kLogitsStride];
  float row[kMaxHeadSize];
  uint32_t qpairs[kMaxRows * kMaxHeadSize / 2];   // bf16 query bits (bf16 dot path)
  uint32_t ppairs[kMaxRows * kMaxBlockSize / 2];  // bf16 weights (bf16 dot path)
  float m[kMaxRows], l[kMaxRows], slope[kMaxRows];
  int64_t limit[kMaxRows];
};

// One scratch area per thread, kept for the life of the thread: a fresh
// ~210 KB malloc per call is an mmap plus page faults every time, which cost
// tens of microseconds per call (a third of a short decode step).
Scratch& thread_scratch() {
  static thread_local Scratch* scratch = nullptr;
  if (scratch == nullptr) scratch = static_cast<Scratch*>(std::malloc(sizeof(Scratch)));
  return *scratch;
}

// Row (hl, t, g) of a tile <-> query head (h0 + hl) * group + g of token t.
template <typename T>
void load_query_rows(const PagedAttentionArgs& a, Scratch& s, const Tile& tile,
                     int64_t first_token, int tokens, int group) {
  const T* query = static_cast<const T*>(a.query);
  for (int64_t hl = 0; hl < tile.heads; ++hl) {
    for (int t = 0; t < tokens; ++t) {
      for (int g = 0; g < group; ++g) {
        const int r = int((hl * tokens + t) * group + g);
        const int64_t head = (tile.h0 + hl) * group + g;
        float* dst = s.q + r * a.head_size;
        const T* src = query + (first_token + t) * a.query_token_stride + head * a.head_size;
        to_float_row(dst, src, a.head_size);
        if constexpr (sizeof(T) == 2) {  // raw bits for the bf16 dot path
          std::memcpy(s.qpairs + r * (a.head_size / 2), src, (a.head_size / 2) * 4);
        }
        scale_row(dst, a.scale, a.head_size);
        s.slope[r] = a.alibi_slopes ? a.alibi_slopes[head] : 0.f;
      }
    }
  }
}

template <typename T>
void store_rows(const PagedAttentionArgs& a, const Scratch& s, const Tile& tile, T* out,
                int64_t first_token, int tokens, int group) {
  for (int64_t hl = 0; hl < tile.heads; ++hl) {
    for (int t = 0; t < tokens; ++t) {
      for (int g = 0; g < group; ++g) {
        const int r = int((hl * tokens + t) * group + g);
        const int64_t head = (tile.h0 + hl) * group + g;
        const float inv = s.l[r] > 0.f ? 1.0f / s.l[r] : 0.f;
        from_float_row(out + (first_token + t) * a.out_token_stride + head * a.head_size,
                       s.acc + r * a.head_size, inv, a.head_size);
      }
    }
  }
}

template <typename T, int64_t kHs>
void paged_attention_typed(const PagedAttentionArgs& a) {
  const T* k_cache = static_cast<const T*>(a.key_cache);
  const T* v_cache = static_cast<const T*>(a.value_cache);
  T* out = static_cast<T*>(a.out);
  const int group = int(a.num_heads / a.num_kv_heads);
  const bool decode = a.query_start_loc == nullptr;
  const bool partitioned = a.partition_size > 0;
  // Decode: as many KV heads per tile as fit (one contiguous read per
  // block). Prefill: all KV heads with a few tokens when groups are small,
  // else one KV head with more tokens (more rows per converted block).
  int64_t heads_per_tile, tile_tokens;
  if (decode) {
    heads_per_tile = kMaxRows / group < a.num_kv_heads ? kMaxRows / group : a.num_kv_heads;
    tile_tokens = 1;
  } else if (group * a.num_kv_heads <= kMaxRows / 4) {
    heads_per_tile = a.num_kv_heads;
    tile_tokens = kMaxRows / (group * a.num_kv_heads);
  } else {
    heads_per_tile = 1;
    tile_tokens = kMaxRows / group;
  }
  // Prefill: rows per KV head a multiple of the kernels' 8-row calls where
  // the tile allows it, so no block gets a short call (8 KV heads x 64, 512
  // tokens: 9 tokens, 8 + 1 rows a head, 1.31-1.34 ms; 8 tokens 1.17-1.20).
  // (8 / gcd(group, 8), from group's lowest set bit: std::gcd would be a
  // weak symbol shared across the ISA variants' objects.)
  const int64_t low_bit = int64_t(group) & -int64_t(group);
  const int64_t tokens_per_8_rows = 8 / (low_bit < 8 ? low_bit : 8);
  if (!decode && tile_tokens >= tokens_per_8_rows) tile_tokens -= tile_tokens % tokens_per_8_rows;
  const int64_t head_tiles = (a.num_kv_heads + heads_per_tile - 1) / heads_per_tile;
  const int64_t parts = partitioned ? a.max_num_partitions : 1;
  int64_t max_tiles = 1;
  if (!decode) {
    for (int64_t s = 0; s < a.num_seqs; ++s) {
      const int64_t q_len = a.query_start_loc[s + 1] - a.query_start_loc[s];
      const int64_t tiles = (q_len + tile_tokens - 1) / tile_tokens;
      max_tiles = tiles > max_tiles ? tiles : max_tiles;
    }
  }
  // Work items: (sequence, query tile, KV head tile, context partition).
  const int64_t items = a.num_seqs * max_tiles * head_tiles * parts;
  // One item (batch-1 decode): run it on the calling thread. Handing it to
  // the team lets the waiting worker take it, and the worker's share of the
  // next GEMVs then streams slower: a batch-1 SmolLM2 decode step measured
  // 8.2-8.8 ms of layers instead of 9.0-9.6 ms this way.
#pragma omp parallel if (items > 1)
  {
    Scratch& s = thread_scratch();
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t part = item % parts;
      const int64_t head_tile = (item / parts) % head_tiles;
      const int64_t tile_idx = (item / parts / head_tiles) % max_tiles;
      const int64_t seq = item / parts / head_tiles / max_tiles;
      const int64_t seq_len = a.seq_lens[seq];
      const int64_t q_begin = decode ? seq : a.query_start_loc[seq];
      const int64_t q_len = decode ? 1 : a.query_start_loc[seq + 1] - q_begin;
      const int64_t first = tile_idx * tile_tokens;
      if (first >= q_len) continue;
      const int tokens = int(q_len - first < tile_tokens ? q_len - first : tile_tokens);
      const int64_t begin = partitioned ? part * a.partition_size : 0;
      if (partitioned && begin >= seq_len) continue;
      const int64_t end = partitioned && begin + a.partition_size < seq_len
                              ? begin + a.partition_size : seq_len;
      const int64_t h0 = head_tile * heads_per_tile;
      const int64_t heads = a.num_kv_heads - h0 < heads_per_tile ? a.num_kv_heads - h0
                                                                 : heads_per_tile;
      Tile tile{h0, heads, tokens * group, s.q, s.qpairs, s.ppairs, s.limit,
                a.alibi_slopes ? s.slope : nullptr, s.m, s.l, s.acc};
      load_query_rows<T>(a, s, tile, q_begin + first, tokens, group);
      // The new tokens are the last q_len positions of the sequence.
      for (int64_t hl = 0; hl < heads; ++hl)
        for (int t = 0; t < tokens; ++t)
          for (int g = 0; g < group; ++g)
            s.limit[(hl * tokens + t) * group + g] = seq_len - q_len + first + t + 1;
      attend<T, kHs>(a, k_cache, v_cache, a.block_tables + seq * a.block_table_stride, seq_len,
                     begin, end, tile, s.row, s.logits);
      if (!partitioned) {
        store_rows(a, s, tile, out, q_begin + first, tokens, group);
        continue;
      }
      // v2: normalised partial output plus its max and sum, per head.
      T* tmp = static_cast<T*>(a.tmp_out);
      for (int r = 0; r < tile.rows(); ++r) {  // decode: row = hl * group + g
        const int64_t head = h0 * group + r;
        const int64_t slot = (seq * a.num_heads + head) * a.max_num_partitions + part;
        a.max_logits[slot] = s.m[r];
        a.exp_sums[slot] = s.l[r];
        const float inv = s.l[r] > 0.f ? 1.0f / s.l[r] : 0.f;
        from_float_row(tmp + slot * a.head_size, s.acc + r * a.head_size, inv, a.head_size);
      }
    }
  }
  if (!partitioned) return;
  // v2 reduce: out = sum_p w_p tmp_p / sum_p w_p, w_p = l_p exp(m_p - max m).
  const T* tmp = static_cast<const T*>(a.tmp_out);
#pragma omp parallel for schedule(static) if (a.num_seqs * a.num_heads >= 64)
  for (int64_t sh = 0; sh < a.num_seqs * a.num_heads; ++sh) {
    const int64_t seq = sh / a.num_heads, head = sh % a.num_heads;
    const int64_t used = (a.seq_lens[seq] + a.partition_size - 1) / a.partition_size;
    const int64_t base = sh * a.max_num_partitions;
    float global_max = kNegInf;
    for (int64_t p = 0; p < used; ++p)
      global_max = a.max_logits[base + p] > global_max ? a.max_logits[base + p] : global_max;
    float acc[kMaxHeadSize];
    for (int64_t i = 0; i < a.head_size; ++i) acc[i] = 0.f;
    float total = 0.f;
    float row[kMaxHeadSize];
    for (int64_t p = 0; p < used; ++p) {
      if (a.exp_sums[base + p] == 0.f) continue;
      const float w = a.exp_sums[base + p] * __builtin_expf(a.max_logits[base + p] - global_max);
      total += w;
      to_float_row(row, tmp + (base + p) * a.head_size, a.head_size);
      axpy(acc, w, row, a.head_size);
    }
    from_float_row(out + seq * a.out_token_stride + head * a.head_size, acc,
                   total > 0.f ? 1.0f / total : 0.f, a.head_size);
  }
}

// Common head sizes get code with the head size fixed at compile time.
template <typename T>
struct PagedAttentionFn {
  static void run(const PagedAttentionArgs& a) {
    switch (a.head_size) {
      case 64: paged_attention_typed<T, 64>(a); break;
      case 128: paged_attention_typed<T, 128>(a); break;
      default: paged_attention_typed<T, 0>(a); break;
    }
  }
};

}  // namespace

void paged_attention(const PagedAttentionArgs& args) { by_dtype<PagedAttentionFn>(args); }

}  // namespace vllm::cpu::VLLM_ISA_NS
