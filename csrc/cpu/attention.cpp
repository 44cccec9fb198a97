// Paged attention on CPU: decode (v1, and v2 with context partitions) and
// prefill / chunked prefill, all reading K/V straight from the paged cache
// [num_blocks, num_kv_heads, block_size, head_size].
//
// One routine, attend(), does the work for a tile of query rows that share
// a KV head: the G query heads of a GQA group, times a few query tokens for
// prefill. It walks the sequence's blocks once, converting each K and V row
// to fp32 a single time for all rows of the tile, with an online softmax
// (running max and sum per row), so nothing of size context_len is stored.
#include <omp.h>

#include "dispatch.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

constexpr int W = FloatVec::kWidth;
// Query rows per tile (query heads of one KV head x query tokens).
constexpr int kMaxRows = int(kAttentionMaxGroup);
constexpr int kMaxBlockSize = int(kAttentionMaxBlockSize);
constexpr int64_t kMaxHeadSize = kAttentionMaxHeadSize;
constexpr float kNegInf = -__builtin_huge_valf();

inline float dot(const float* a, const float* b, int64_t n) {
  FloatVec acc0, acc1;
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    acc0 = FloatVec::fma(FloatVec::load(a + i), FloatVec::load(b + i), acc0);
    acc1 = FloatVec::fma(FloatVec::load(a + i + W), FloatVec::load(b + i + W), acc1);
  }
  for (; i + W <= n; i += W) acc0 = FloatVec::fma(FloatVec::load(a + i), FloatVec::load(b + i), acc0);
  if (i < n) acc1 = FloatVec::fma(load_tail(a + i, int(n - i)), load_tail(b + i, int(n - i)), acc1);
  return (acc0 + acc1).reduce_add();
}

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

// A tile of query rows attending to one KV head of one sequence.
struct Tile {
  int rows;
  const float* q;        // rows x head_size, already multiplied by scale
  const int64_t* limit;  // per row: context positions [0, limit) are visible
  const float* slope;    // per row ALiBi slope, or null
  float* m;              // per row running max
  float* l;              // per row running sum of exp
  float* acc;            // rows x head_size, unnormalised output
};

// Online-softmax attention of `tile` over context positions [begin, end).
template <typename T>
void attend(const PagedAttentionArgs& a, const T* k_cache, const T* v_cache,
            const int32_t* block_table, int64_t kv_head, int64_t seq_len, int64_t begin,
            int64_t end, Tile& tile, float* kv_row, float* logits) {
  const int64_t hs = a.head_size, bs = a.block_size;
  for (int r = 0; r < tile.rows; ++r) {
    tile.m[r] = kNegInf;
    tile.l[r] = 0.f;
    for (int64_t i = 0; i < hs; ++i) tile.acc[r * hs + i] = 0.f;
  }
  int64_t visible_end = 0;
  for (int r = 0; r < tile.rows; ++r) visible_end = tile.limit[r] > visible_end ? tile.limit[r] : visible_end;
  if (visible_end < end) end = visible_end;
  for (int64_t start = begin - begin % bs; start < end; start += bs) {
    const int64_t block = block_table[start / bs];
    const int64_t base = (block * a.num_kv_heads + kv_head) * bs * hs;
    const int64_t lo = start > begin ? start : begin;
    const int64_t hi = start + bs < end ? start + bs : end;
    const int n = int(hi - lo);
    // Scores for this block's tokens, every row.
    for (int64_t pos = lo; pos < hi; ++pos) {
      to_float_row(kv_row, k_cache + base + (pos - start) * hs, hs);
      for (int r = 0; r < tile.rows; ++r) {
        float s = kNegInf;
        if (pos < tile.limit[r]) {
          s = dot(tile.q + r * hs, kv_row, hs);
          if (tile.slope) s += tile.slope[r] * float(pos - seq_len + 1);
        }
        logits[r * kMaxBlockSize + (pos - lo)] = s;
      }
    }
    // Online softmax update: rescale what was accumulated to the new max.
    for (int r = 0; r < tile.rows; ++r) {
      float* row = logits + r * kMaxBlockSize;
      float block_max = kNegInf;
      for (int j = 0; j < n; ++j) block_max = row[j] > block_max ? row[j] : block_max;
      if (block_max == kNegInf) {  // nothing visible to this row here
        for (int j = 0; j < n; ++j) row[j] = 0.f;
        continue;
      }
      const float new_max = block_max > tile.m[r] ? block_max : tile.m[r];
      const float correction = __builtin_expf(tile.m[r] - new_max);
      float sum = 0.f;
      for (int j = 0; j < n; ++j) {
        row[j] = row[j] == kNegInf ? 0.f : __builtin_expf(row[j] - new_max);
        sum += row[j];
      }
      if (correction != 1.f) scale_row(tile.acc + r * hs, correction, hs);
      tile.l[r] = tile.l[r] * correction + sum;
      tile.m[r] = new_max;
    }
    // Weighted values.
    for (int64_t pos = lo; pos < hi; ++pos) {
      to_float_row(kv_row, v_cache + base + (pos - start) * hs, hs);
      for (int r = 0; r < tile.rows; ++r) {
        const float p = logits[r * kMaxBlockSize + (pos - lo)];
        if (p != 0.f) axpy(tile.acc + r * hs, p, kv_row, hs);
      }
    }
  }
}

// Per-thread scratch on the stack: the tile's state and one fp32 K/V row.
struct Scratch {
  float q[kMaxRows * kMaxHeadSize];
  float acc[kMaxRows * kMaxHeadSize];
  float logits[kMaxRows * kMaxBlockSize];
  float kv_row[kMaxHeadSize];
  float m[kMaxRows], l[kMaxRows], slope[kMaxRows];
  int64_t limit[kMaxRows];
};

template <typename T>
void load_query_rows(const PagedAttentionArgs& a, Scratch& s, int64_t first_token, int tokens,
                     int64_t kv_head, int group) {
  const T* query = static_cast<const T*>(a.query);
  for (int t = 0; t < tokens; ++t) {
    for (int g = 0; g < group; ++g) {
      const int r = t * group + g;
      const int64_t head = kv_head * group + g;
      const T* src = query + (first_token + t) * a.query_token_stride + head * a.head_size;
      float* dst = s.q + r * a.head_size;
      to_float_row(dst, src, a.head_size);
      scale_row(dst, a.scale, a.head_size);
      s.slope[r] = a.alibi_slopes ? a.alibi_slopes[head] : 0.f;
    }
  }
}

template <typename T>
void store_rows(const PagedAttentionArgs& a, const Scratch& s, T* out, int64_t token_stride,
                int64_t first_token, int tokens, int64_t kv_head, int group) {
  for (int t = 0; t < tokens; ++t) {
    for (int g = 0; g < group; ++g) {
      const int r = t * group + g;
      const int64_t head = kv_head * group + g;
      const float inv = s.l[r] > 0.f ? 1.0f / s.l[r] : 0.f;
      from_float_row(out + (first_token + t) * token_stride + head * a.head_size,
                     s.acc + r * a.head_size, inv, a.head_size);
    }
  }
}

template <typename T>
void paged_attention_typed(const PagedAttentionArgs& a) {
  const T* k_cache = static_cast<const T*>(a.key_cache);
  const T* v_cache = static_cast<const T*>(a.value_cache);
  T* out = static_cast<T*>(a.out);
  const int group = int(a.num_heads / a.num_kv_heads);
  const bool decode = a.query_start_loc == nullptr;
  const bool partitioned = a.partition_size > 0;
  // Query tokens per tile: all rows of a tile share each converted K/V row.
  const int tile_tokens = decode ? 1 : (kMaxRows / group > 0 ? kMaxRows / group : 1);
  const int64_t parts = partitioned ? a.max_num_partitions : 1;
  // Work items: (sequence, KV head, query tile, context partition).
  int64_t max_tiles = 1;
  if (!decode) {
    for (int64_t s = 0; s < a.num_seqs; ++s) {
      const int64_t q_len = a.query_start_loc[s + 1] - a.query_start_loc[s];
      const int64_t tiles = (q_len + tile_tokens - 1) / tile_tokens;
      max_tiles = tiles > max_tiles ? tiles : max_tiles;
    }
  }
  const int64_t items = a.num_seqs * a.num_kv_heads * max_tiles * parts;
#pragma omp parallel
  {
    Scratch& s = *static_cast<Scratch*>(__builtin_alloca(sizeof(Scratch)));
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t part = item % parts;
      const int64_t tile_idx = (item / parts) % max_tiles;
      const int64_t kv_head = (item / parts / max_tiles) % a.num_kv_heads;
      const int64_t seq = item / parts / max_tiles / a.num_kv_heads;
      const int64_t seq_len = a.seq_lens[seq];
      const int64_t q_begin = decode ? seq : a.query_start_loc[seq];
      const int64_t q_len = decode ? 1 : a.query_start_loc[seq + 1] - q_begin;
      const int64_t first = tile_idx * tile_tokens;
      if (first >= q_len) continue;
      const int tokens = int(q_len - first < tile_tokens ? q_len - first : tile_tokens);
      const int64_t begin = part * (partitioned ? a.partition_size : 0);
      const int64_t end = partitioned ? (begin + a.partition_size < seq_len
                                             ? begin + a.partition_size : seq_len)
                                      : seq_len;
      if (begin >= seq_len && partitioned) continue;
      load_query_rows<T>(a, s, q_begin + first, tokens, kv_head, group);
      // The new tokens are the last q_len positions of the sequence.
      for (int t = 0; t < tokens; ++t)
        for (int g = 0; g < group; ++g) s.limit[t * group + g] = seq_len - q_len + first + t + 1;
      Tile tile{tokens * group, s.q, s.limit, a.alibi_slopes ? s.slope : nullptr,
                s.m, s.l, s.acc};
      attend(a, k_cache, v_cache, a.block_tables + seq * a.block_table_stride, kv_head, seq_len,
             begin, end, tile, s.kv_row, s.logits);
      if (!partitioned) {
        store_rows(a, s, out, a.out_token_stride, q_begin + first, tokens, kv_head, group);
        continue;
      }
      // v2: normalised partial output plus its max and sum, per head.
      T* tmp = static_cast<T*>(a.tmp_out);
      for (int g = 0; g < group; ++g) {
        const int64_t head = kv_head * group + g;
        const int64_t slot = (seq * a.num_heads + head) * a.max_num_partitions + part;
        a.max_logits[slot] = s.m[g];
        a.exp_sums[slot] = s.l[g];
        const float inv = s.l[g] > 0.f ? 1.0f / s.l[g] : 0.f;
        from_float_row(tmp + slot * a.head_size, s.acc + g * a.head_size, inv, a.head_size);
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

template <typename T>
struct PagedAttentionFn {
  static void run(const PagedAttentionArgs& a) { paged_attention_typed<T>(a); }
};

}  // namespace

void paged_attention(const PagedAttentionArgs& args) { by_dtype<PagedAttentionFn>(args); }

}  // namespace vllm::cpu::VLLM_ISA_NS
