// Multi-head latent attention (MLA) on CPU, absorbed form, decode and
// prefill, reading the paged latent cache [num_blocks, block_size,
// latent_dim] (MlaAttentionArgs in csrc/core/mla_args.h).
//
// Every query head attends over the same latents (one KV "head"), so the
// work is two small GEMMs per chunk of cached positions: scores S = Q C^T
// (rows = query heads x query tokens of one sequence, D = latent_dim) and
// the output update O += P C[:, :v_dim]. With DeepSeek's 576-wide latent
// and 16 heads that is ~34 FLOPs per cached bf16 byte: compute-bound on a
// CPU, unlike ordinary decode attention. So a tile holds up to 16 rows (all
// heads of a token when they fit) and each chunk of up to 32 positions is
// converted to fp32 once per tile; the GEMMs run register-blocked
// micro-kernels (RB rows x TB positions of scores, their TB x RB dot
// products summed across lanes in one transposing reduction; RB rows x DB
// vectors of output), with an online softmax per row between them, so
// nothing of context length is stored. Decode with fewer sequences than
// threads splits each context into ranges whose partial softmax results
// are merged at the end (flash-decoding), so a batch-1 step uses every core
// while still reading each latent once per head tile.
#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "dispatch.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

constexpr int W = FloatVec::kWidth;
constexpr int kTileRows = 16;   // query rows (heads x tokens) per tile
constexpr int kChunk = 32;      // cached positions per step of a tile
constexpr int64_t kMinSplit = 256;  // cached positions per decode split, at least
constexpr float kNegInf = -__builtin_huge_valf();
// Register blocking: RB rows x TB positions of scores (RB x TB accumulators),
// RB rows x DB vectors of output (RB x DB accumulators). AVX-512 has 32
// vector registers, AVX2 and the scalar stand-in 16.
#if defined(VLLM_ISA_AVX512)
constexpr int RB = 4, TB = 4, DB = 4;
#else
constexpr int RB = 2, TB = 4, DB = 4;
#endif
static_assert(kTileRows % RB == 0, "tiles hold whole row blocks");

// out[i * stride + j] = sum of the lanes of acc[i][j]: one transposing
// reduction for all RB x TB accumulators (45 shuffles and adds for 16
// vectors on AVX-512, instead of 8 per vector one by one).
inline void store_sums(FloatVec (&acc)[RB][TB], float* out, int64_t stride) {
#if defined(VLLM_ISA_AVX512)
  __m512 v[16];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < TB; ++j) v[i * TB + j] = acc[i][j].v;
  __m512 w[8], x[4];
#pragma GCC unroll 16
  for (int k = 0; k < 8; ++k)  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3]
    w[k] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]),
                         _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
#pragma GCC unroll 16
  for (int k = 0; k < 4; ++k)  // per 128-bit lane: the lane's sums of 4 vectors
    x[k] = _mm512_add_ps(_mm512_shuffle_ps(w[2 * k], w[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(w[2 * k], w[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 z0 = _mm512_add_ps(_mm512_shuffle_f32x4(x[0], x[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(x[0], x[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 z1 = _mm512_add_ps(_mm512_shuffle_f32x4(x[2], x[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(x[2], x[3], _MM_SHUFFLE(3, 1, 3, 1)));
  // lane i: the totals of v[4i .. 4i+3], i.e. row i's TB scores
  const __m512 r = _mm512_add_ps(_mm512_shuffle_f32x4(z0, z1, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(z0, z1, _MM_SHUFFLE(3, 1, 3, 1)));
  _mm_storeu_ps(out, _mm512_castps512_ps128(r));
  _mm_storeu_ps(out + stride, _mm512_extractf32x4_ps(r, 1));
  _mm_storeu_ps(out + 2 * stride, _mm512_extractf32x4_ps(r, 2));
  _mm_storeu_ps(out + 3 * stride, _mm512_extractf32x4_ps(r, 3));
#elif defined(VLLM_ISA_AVX2)
  __m256 v[8];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < TB; ++j) v[i * TB + j] = acc[i][j].v;
  __m256 w[4], x[2];
#pragma GCC unroll 16
  for (int k = 0; k < 4; ++k)
    w[k] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * k], v[2 * k + 1]),
                         _mm256_unpackhi_ps(v[2 * k], v[2 * k + 1]));
#pragma GCC unroll 16
  for (int k = 0; k < 2; ++k)
    x[k] = _mm256_add_ps(_mm256_shuffle_ps(w[2 * k], w[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(w[2 * k], w[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // low half: totals of v[0..3] (row 0), high half: of v[4..7] (row 1)
  const __m256 r = _mm256_add_ps(_mm256_permute2f128_ps(x[0], x[1], 0x20),
                                 _mm256_permute2f128_ps(x[0], x[1], 0x31));
  _mm_storeu_ps(out, _mm256_castps256_ps128(r));
  _mm_storeu_ps(out + stride, _mm256_extractf128_ps(r, 1));
#else
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < TB; ++j) out[i * stride + j] = acc[i][j].reduce_add();
#endif
}

// Scores of RB rows against TB positions: out[i * out_stride + j] = q_i . c_j.
inline void scores_block(const float* q, const float* c, int64_t D, float* out,
                         int64_t out_stride) {
  FloatVec acc[RB][TB];
  for (int64_t d = 0; d < D; d += W) {
    FloatVec cv[TB];
#pragma GCC unroll 16
    for (int j = 0; j < TB; ++j) cv[j] = FloatVec::load(c + j * D + d);
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) {
      const FloatVec qv = FloatVec::load(q + i * D + d);
#pragma GCC unroll 16
      for (int j = 0; j < TB; ++j) acc[i][j] = FloatVec::fma(qv, cv[j], acc[i][j]);
    }
  }
  store_sums(acc, out, out_stride);
}

// The same for one position (the chunk's last n % TB).
inline void scores_column(const float* q, const float* c, int64_t D, float* out,
                          int64_t out_stride) {
  FloatVec acc[RB];
  for (int64_t d = 0; d < D; d += W) {
    const FloatVec cv = FloatVec::load(c + d);
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) acc[i] = FloatVec::fma(FloatVec::load(q + i * D + d), cv, acc[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i) out[i * out_stride] = acc[i].reduce_add();
}

// acc_i[0, NV * W) += sum_t p_i[t] c_t[0, NV * W) for i < RB, t < n.
template <int NV>
inline void update_block(const float* p, int64_t p_stride, int n, const float* c, int64_t D,
                         float* acc, int64_t acc_stride) {
  FloatVec a[RB][NV];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 16
    for (int k = 0; k < NV; ++k) a[i][k] = FloatVec::load(acc + i * acc_stride + k * W);
  for (int t = 0; t < n; ++t) {
    FloatVec cv[NV];
#pragma GCC unroll 16
    for (int k = 0; k < NV; ++k) cv[k] = FloatVec::load(c + t * D + k * W);
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) {
      const FloatVec pv(p[i * p_stride + t]);
#pragma GCC unroll 16
      for (int k = 0; k < NV; ++k) a[i][k] = FloatVec::fma(pv, cv[k], a[i][k]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 16
    for (int k = 0; k < NV; ++k) a[i][k].store(acc + i * acc_stride + k * W);
}

// Per-thread scratch, all fp32.
struct Scratch {
  float* q;       // [kTileRows][D], scaled queries
  float* acc;     // [kTileRows][V], unnormalised outputs
  float* s;       // [kTileRows][kChunk], scores, then weights
  float* c;       // [kChunk][D], the chunk's latents (16-bit caches)
  float m[kTileRows];
  float l[kTileRows];
  int64_t limit[kTileRows];  // positions [0, limit) visible to the row
};

// Where a tile's rows go: the output (normalised), or, for one range of a
// split context, a partial result (running max, sum, unnormalised output).
struct TileResult {
  void* out;        // null when partial
  float* part_m;    // [kTileRows]
  float* part_l;    // [kTileRows]
  float* part_acc;  // [kTileRows][V]
};

// One tile: `rows` rows of sequence `seq`, row r = (query token t0 + r /
// heads, head h0 + r % heads), over cached positions [p_begin, p_end).
template <typename T>
void run_tile(const MlaAttentionArgs& a, Scratch& w, int64_t seq, int64_t first_token,
              int64_t q_len, int64_t t0, int64_t tokens, int64_t h0, int64_t heads,
              int64_t p_begin, int64_t p_end, const TileResult& result) {
  const int64_t D = a.latent_dim, V = a.v_dim, bs = a.block_size;
  const int rows = int(tokens * heads);
  const int padded = (rows + RB - 1) / RB * RB;
  const int64_t ctx = a.seq_lens[seq];
  const int32_t* table = a.block_tables + seq * a.block_table_stride;
  const T* query = static_cast<const T*>(a.query);
  int64_t span = 0;  // positions any row of the tile sees
  for (int r = 0; r < padded; ++r) {
    float* qr = w.q + int64_t(r) * D;
    if (r < rows) {
      const int64_t t = t0 + r / heads, h = h0 + r % heads;
      const T* src = query + (first_token + t) * a.query_token_stride + h * D;
      const FloatVec sv(a.scale);
      for (int64_t d = 0; d < D; d += W) (FloatVec::load(src + d) * sv).store(qr + d);
      w.limit[r] = ctx - q_len + t + 1;
      span = w.limit[r] > span ? w.limit[r] : span;
    } else {
      std::memset(qr, 0, sizeof(float) * D);  // padding rows: finite, never stored
      w.limit[r] = 0;
    }
    std::memset(w.acc + int64_t(r) * V, 0, sizeof(float) * V);
    w.m[r] = kNegInf;
    w.l[r] = 0.f;
  }
  if (span > p_end) span = p_end;
  const T* cache = static_cast<const T*>(a.kv_cache);
  for (int64_t p0 = p_begin; p0 < span;) {
    const int64_t block = table[p0 / bs], offset = p0 % bs;
    int n = int(bs - offset);
    if (n > kChunk) n = kChunk;
    if (n > span - p0) n = int(span - p0);
    const T* src = cache + (block * bs + offset) * D;
    const float* c;
    if constexpr (sizeof(T) == sizeof(float)) {
      c = reinterpret_cast<const float*>(src);
    } else {
      for (int64_t i = 0; i < int64_t(n) * D; i += W) FloatVec::load(src + i).store(w.c + i);
      c = w.c;
    }
    // scores
    for (int r = 0; r < padded; r += RB) {
      const float* q = w.q + int64_t(r) * D;
      float* out = w.s + r * kChunk;
      int j = 0;
      for (; j + TB <= n; j += TB) scores_block(q, c + j * D, D, out + j, kChunk);
      for (; j < n; ++j) scores_column(q, c + j * D, D, out + j, kChunk);
    }
    // online softmax: weights in place of the scores
    for (int r = 0; r < padded; ++r) {
      float* s = w.s + r * kChunk;
      const int64_t seen = r < rows ? w.limit[r] - p0 : n;
      const int visible = int(seen < n ? seen : n);
      if (visible <= 0) {
        for (int j = 0; j < n; ++j) s[j] = 0.f;
        continue;
      }
      float mx = kNegInf;
      for (int j = 0; j < visible; ++j) mx = s[j] > mx ? s[j] : mx;
      const float m_new = mx > w.m[r] ? mx : w.m[r];
      if (m_new > w.m[r] && w.l[r] > 0.f) {
        const float corr = __builtin_expf(w.m[r] - m_new);
        float* acc = w.acc + int64_t(r) * V;
        const FloatVec cv(corr);
        for (int64_t d = 0; d < V; d += W) (FloatVec::load(acc + d) * cv).store(acc + d);
        w.l[r] *= corr;
      }
      w.m[r] = m_new;
      const FloatVec mv(m_new);
      int j = 0;
      for (; j + W <= visible; j += W) exp(FloatVec::load(s + j) - mv).store(s + j);
      for (; j < visible; ++j) s[j] = __builtin_expf(s[j] - m_new);
      float sum = 0.f;
      for (j = 0; j < visible; ++j) sum += s[j];
      for (j = visible; j < n; ++j) s[j] = 0.f;
      w.l[r] += sum;
    }
    // outputs
    for (int r = 0; r < padded; r += RB) {
      const float* p = w.s + r * kChunk;
      float* acc = w.acc + int64_t(r) * V;
      int64_t d = 0;
      for (; d + DB * W <= V; d += DB * W) update_block<DB>(p, kChunk, n, c + d, D, acc + d, V);
      for (; d < V; d += W) update_block<1>(p, kChunk, n, c + d, D, acc + d, V);
    }
    p0 += n;
  }
  if (result.out == nullptr) {  // one range of a split context: merged later
    std::memcpy(result.part_m, w.m, sizeof(float) * rows);
    std::memcpy(result.part_l, w.l, sizeof(float) * rows);
    std::memcpy(result.part_acc, w.acc, sizeof(float) * rows * V);
    return;
  }
  T* out = static_cast<T*>(result.out);
  for (int r = 0; r < rows; ++r) {
    const int64_t t = t0 + r / heads, h = h0 + r % heads;
    T* dst = out + (first_token + t) * a.out_token_stride + h * V;
    const float* acc = w.acc + int64_t(r) * V;
    const FloatVec inv(w.l[r] > 0.f ? 1.f / w.l[r] : 0.f);
    for (int64_t d = 0; d < V; d += W) (FloatVec::load(acc + d) * inv).store(dst + d);
  }
}

// Decode rows of one head tile whose context was split into `splits`
// ranges: out = sum_i e^(m_i - M) acc_i / sum_i e^(m_i - M) l_i. `base`:
// the first range's partial result, the others `stride` floats apart, each
// m [kTileRows], l [kTileRows], acc [kTileRows][V].
template <typename T>
void merge_splits(const MlaAttentionArgs& a, int64_t seq, int64_t h0, int64_t heads,
                  int64_t splits, const float* base, int64_t stride, float* merged) {
  const int64_t V = a.v_dim;
  for (int64_t r = 0; r < heads; ++r) {
    float top = kNegInf;
    for (int64_t i = 0; i < splits; ++i) {
      const float m = base[i * stride + r];
      top = m > top ? m : top;
    }
    std::memset(merged, 0, sizeof(float) * V);
    float total = 0.f;
    for (int64_t i = 0; i < splits; ++i) {
      const float* part = base + i * stride;
      const float l = part[kTileRows + r];
      if (l <= 0.f) continue;  // a range the row saw nothing of
      const float weight = __builtin_expf(part[r] - top);
      total += weight * l;
      const float* acc = part + 2 * kTileRows + r * V;
      const FloatVec wv(weight);
      for (int64_t d = 0; d < V; d += W)
        FloatVec::fma(wv, FloatVec::load(acc + d), FloatVec::load(merged + d)).store(merged + d);
    }
    T* dst = static_cast<T*>(a.out) + seq * a.out_token_stride + (h0 + r) * V;
    const FloatVec inv(total > 0.f ? 1.f / total : 0.f);
    for (int64_t d = 0; d < V; d += W) (FloatVec::load(merged + d) * inv).store(dst + d);
  }
}

template <typename T>
struct MlaTyped {
  static void run(const MlaAttentionArgs& a) {
    const int64_t H = a.num_heads, D = a.latent_dim, V = a.v_dim;
    const bool decode = a.query_start_loc == nullptr;
    const int threads = omp_get_max_threads();
    const int64_t heads = H < kTileRows ? H : kTileRows;  // per tile
    const int64_t head_tiles = (H + heads - 1) / heads;
    const int64_t tokens_per_tile = decode || heads < H ? 1 : kTileRows / H;
    // Decode with fewer head tiles than 2 per thread: split the contexts.
    int64_t splits = 1;
    if (decode && a.num_seqs * head_tiles < 2 * threads) {
      int64_t longest = 0;
      for (int64_t s = 0; s < a.num_seqs; ++s)
        longest = a.seq_lens[s] > longest ? a.seq_lens[s] : longest;
      const int64_t wanted = (2 * threads + a.num_seqs * head_tiles - 1) / (a.num_seqs * head_tiles);
      const int64_t most = (longest + kMinSplit - 1) / kMinSplit;
      splits = wanted < most ? wanted : most;
      if (splits < 1) splits = 1;
    }
    // tiles of sequence s: [tile_start[s], tile_start[s + 1]); in a sequence,
    // ordered (token chunk, head tile, split)
    int64_t* tile_start = static_cast<int64_t*>(std::malloc(sizeof(int64_t) * (a.num_seqs + 1)));
    tile_start[0] = 0;
    for (int64_t s = 0; s < a.num_seqs; ++s) {
      const int64_t q_len = decode ? 1 : a.query_start_loc[s + 1] - a.query_start_loc[s];
      tile_start[s + 1] = tile_start[s] + (q_len + tokens_per_tile - 1) / tokens_per_tile *
                                              head_tiles * splits;
    }
    const int64_t num_tiles = tile_start[a.num_seqs];
    float* partial = nullptr;  // per tile: m, l [kTileRows] each, acc [kTileRows][V]
    const int64_t part_floats = kTileRows * (2 + V);
    if (splits > 1)
      partial = static_cast<float*>(std::malloc(sizeof(float) * num_tiles * part_floats));
#pragma omp parallel if (num_tiles > 1)
    {
      Scratch w;
      const size_t bytes = sizeof(float) * (kTileRows * D + kTileRows * V + kTileRows * kChunk +
                                            kChunk * D);
      float* buffer = static_cast<float*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
      w.q = buffer;
      w.acc = w.q + kTileRows * D;
      w.s = w.acc + kTileRows * V;
      w.c = w.s + kTileRows * kChunk;
      int64_t seq = 0;
#pragma omp for schedule(dynamic, 1)
      for (int64_t tile = 0; tile < num_tiles; ++tile) {
        while (tile >= tile_start[seq + 1]) ++seq;
        while (tile < tile_start[seq]) --seq;
        const int64_t first = decode ? seq : a.query_start_loc[seq];
        const int64_t q_len = decode ? 1 : a.query_start_loc[seq + 1] - a.query_start_loc[seq];
        const int64_t index = tile - tile_start[seq];
        const int64_t split = index % splits;
        const int64_t head_tile = index / splits % head_tiles;
        const int64_t t0 = index / splits / head_tiles * tokens_per_tile;
        const int64_t h0 = head_tile * heads;
        const int64_t tokens = q_len - t0 < tokens_per_tile ? q_len - t0 : tokens_per_tile;
        const int64_t tile_heads = H - h0 < heads ? H - h0 : heads;
        const int64_t ctx = a.seq_lens[seq];
        const int64_t range = (ctx + splits - 1) / splits;
        TileResult result{a.out, nullptr, nullptr, nullptr};
        if (splits > 1) {
          float* part = partial + tile * part_floats;
          result = TileResult{nullptr, part, part + kTileRows, part + 2 * kTileRows};
        }
        run_tile<T>(a, w, seq, first, q_len, t0, tokens, h0, tile_heads, split * range,
                    (split + 1) * range, result);
      }
      if (splits > 1) {
#pragma omp for schedule(static)
        for (int64_t job = 0; job < a.num_seqs * head_tiles; ++job) {
          const int64_t s = job / head_tiles, h0 = job % head_tiles * heads;
          const int64_t tile_heads = H - h0 < heads ? H - h0 : heads;
          // this head tile's ranges: tiles job * splits .. + splits - 1
          merge_splits<T>(a, s, h0, tile_heads, splits, partial + job * splits * part_floats,
                          part_floats, w.acc);
        }
      }
      std::free(buffer);
    }
    std::free(partial);
    std::free(tile_start);
  }
};

}  // namespace

void mla_attention(const MlaAttentionArgs& args) { by_dtype<MlaTyped>(args); }

}  // namespace vllm::cpu::VLLM_ISA_NS
