// Paged attention on NVIDIA/AMD GPUs: decode (v1; v2 with partitions and a
// reduce) and prefill / chunked prefill, reading the paged cache directly.
//
// Main kernel (block_size and head_size multiples of 8, 16-byte aligned
// caches; every real configuration): one thread block per (query token, KV
// head, tile of up to 8 of its query heads, partition), so a GQA group reads
// each key and value once. Scores: a pair of threads takes 8 consecutive
// context positions of one cache block, each walking half the head
// dimensions and loading 8 keys per 16-byte access (the [head_size,
// block_size] key layout keeps them adjacent), feeding every query head of
// the tile. Values: each thread owns 8 head-size elements of one token row
// (16-byte loads, several rows in flight, rows split over thread groups),
// summed across groups at the end. An online softmax over chunks of kChunk
// positions keeps shared memory fixed.
//
// The scalar kernel below it serves any other shape: one thread block per
// (query token, query head, partition), element loads.
#include "../cuda_compat.h"
#include "attention_launch.h"

namespace vllm::gpu {
namespace {

constexpr int kThreads = 128;
constexpr int kVec = 8;                    // cache elements per vector access
constexpr int kChunk = kThreads * kVec;    // context positions per round (main kernel)
constexpr int kScalarChunk = 256;          // context positions per round (scalar kernel)
constexpr int kMaxHeadSize = 256;
constexpr int kMaxTile = 8;                // query heads sharing one thread block
constexpr float kNegInf = -__builtin_huge_valf();

__device__ __forceinline__ float block_max(float v, float* scratch) {
  v = warp_max(v);
  const int lane = threadIdx.x % kVllmWarpSize, warp = threadIdx.x / kVllmWarpSize;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = kNegInf;
  for (int w = 0; w < kThreads / kVllmWarpSize; ++w) m = fmaxf(m, scratch[w]);
  __syncthreads();
  return m;
}

// 8 consecutive elements at a 16-byte aligned address: loaded raw (so
// loads in flight cost 4 registers for 16-bit types, not 8), then as floats.
template <typename T>
struct Raw8 {
  uint4 words[kVec * sizeof(T) / sizeof(uint4)];
};

template <typename T>
__device__ __forceinline__ Raw8<T> load_raw8(const T* src) {
  Raw8<T> raw;
#pragma unroll
  for (int w = 0; w < int(sizeof(raw.words) / sizeof(uint4)); ++w)
    raw.words[w] = reinterpret_cast<const uint4*>(src)[w];
  return raw;
}

template <typename T>
__device__ __forceinline__ float raw_at(const Raw8<T>& raw, int i) {
  return to_float(reinterpret_cast<const T*>(raw.words)[i]);
}

template <typename T>
__device__ __forceinline__ void load8(const T* src, float* dst) {
  const Raw8<T> raw = load_raw8(src);
#pragma unroll
  for (int i = 0; i < kVec; ++i) dst[i] = raw_at(raw, i);
}

// The query token's sequence and the context range [begin, end) it attends
// to in this partition (causal within the sequence's new tokens).
struct QuerySpan {
  int64_t seq, seq_len, begin, end;
};

__device__ __forceinline__ QuerySpan query_span(const PagedAttentionArgs& p, int64_t token,
                                                int64_t part) {
  int64_t seq = token, q_len = 1, q_index = 0;
  if (p.query_start_loc) {
    int64_t lo = 0, hi = p.num_seqs;  // last seq with start <= token
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (p.query_start_loc[mid] <= token) lo = mid; else hi = mid;
    }
    seq = lo;
    q_len = p.query_start_loc[seq + 1] - p.query_start_loc[seq];
    q_index = token - p.query_start_loc[seq];
  }
  const int64_t seq_len = p.seq_lens[seq];
  const int64_t visible = seq_len - q_len + q_index + 1;
  int64_t begin = 0, end = visible;
  if (p.partition_size > 0) {
    begin = part * p.partition_size;
    end = begin + p.partition_size < visible ? begin + p.partition_size : visible;
  }
  return {seq, seq_len, begin, end};
}

// Writes head `head`'s normalised output, or its partition's partial result.
template <typename T>
__device__ __forceinline__ void store_head(const PagedAttentionArgs& p, int64_t token,
                                           int64_t seq, int64_t head, int64_t part, int64_t d,
                                           float value, float m, float l) {
  const float inv = l > 0.f ? 1.f / l : 0.f;
  if (p.partition_size > 0) {
    const int64_t slot = (seq * p.num_heads + head) * p.max_num_partitions + part;
    if (d == 0) {
      p.max_logits[slot] = m;
      p.exp_sums[slot] = l;
    }
    static_cast<T*>(p.tmp_out)[slot * p.head_size + d] = from_float<T>(value * inv);
    return;
  }
  static_cast<T*>(p.out)[token * p.out_token_stride + head * p.head_size + d] =
      from_float<T>(value * inv);
}

// kTile: query heads per thread block (a power of two <= kMaxTile); the last
// tile of a group may hold fewer (`heads`), the rest compute on zeros.
template <typename T, int kTile>
__global__ void __launch_bounds__(kThreads, kTile >= 8 ? 2 : 4) paged_attention_vec_kernel(PagedAttentionArgs p) {
  __shared__ float q_s[kTile][kMaxHeadSize];
  __shared__ float s_s[kTile][kChunk];  // scores, then weights; at the end, partial outputs
  __shared__ float m_s[kTile], l_s[kTile], corr_s[kTile];
  const int64_t token = blockIdx.x, part = blockIdx.z;
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t tiles = (group + kTile - 1) / kTile;
  const int64_t kv_head = blockIdx.y / tiles;
  const int64_t first = (blockIdx.y % tiles) * kTile;  // within the group
  const int64_t head0 = kv_head * group + first;
  const int heads = int(group - first < kTile ? group - first : kTile);
  const int hs = int(p.head_size), bs = int(p.block_size);
  const QuerySpan span = query_span(p, token, part);

  const T* query = static_cast<const T*>(p.query) + token * p.query_token_stride + head0 * hs;
  for (int i = threadIdx.x; i < kTile * hs; i += kThreads) {
    const int g = i / hs, d = i % hs;
    q_s[g][d] = g < heads ? to_float(query[i]) * p.scale : 0.f;
  }
  if (threadIdx.x < kTile) {
    m_s[threadIdx.x] = kNegInf;
    l_s[threadIdx.x] = 0.f;
  }
  float slope[kTile];
#pragma unroll
  for (int g = 0; g < kTile; ++g)
    slope[g] = p.alibi_slopes && g < heads ? p.alibi_slopes[head0 + g] : 0.f;
  __syncthreads();

  const T* k_cache = static_cast<const T*>(p.key_cache);
  const T* v_cache = static_cast<const T*>(p.value_cache);
  const int32_t* table = p.block_tables + span.seq * p.block_table_stride;
  const int64_t head_stride = int64_t(hs) * bs;  // one KV head of one block
  // Value phase: thread -> (row group, 8 head elements).
  const int vecs_per_row = hs / kVec;
  const int row_groups = kThreads / vecs_per_row;
  const int row_group = threadIdx.x / vecs_per_row;
  const int d0 = (threadIdx.x % vecs_per_row) * kVec;
  float acc[kTile][kVec] = {};

  for (int64_t chunk = span.begin; chunk < span.end; chunk += kChunk) {
    const int n = int(span.end - chunk < kChunk ? span.end - chunk : kChunk);
    // Scores: a thread pair takes 8 positions (chunk is a multiple of 8, so
    // they share a cache block), each thread half the head dimensions; the
    // pair adds its halves by a shuffle. Every lane runs the same passes,
    // as the shuffle needs the whole warp.
    for (int pass = 0; pass < n; pass += kThreads / 2 * kVec) {
      const int i0 = pass + (threadIdx.x / 2) * kVec;
      const bool active = i0 < n;
      float s[kTile][kVec] = {};
      if (active) {
        const int64_t pos0 = chunk + i0;
        const int64_t block = table[pos0 / bs];
        const int d_begin = (threadIdx.x % 2) * (hs / 2);
        const T* k = k_cache + (block * p.num_kv_heads + kv_head) * head_stride + pos0 % bs +
                     int64_t(d_begin) * bs;
#pragma unroll 4
        for (int d = 0; d < hs / 2; ++d) {
          float kv[kVec];
          load8(k + int64_t(d) * bs, kv);
#pragma unroll
          for (int g = 0; g < kTile; ++g) {
            const float qd = q_s[g][d_begin + d];
#pragma unroll
            for (int i = 0; i < kVec; ++i) s[g][i] += qd * kv[i];
          }
        }
      }
#pragma unroll
      for (int g = 0; g < kTile; ++g)
#pragma unroll
        for (int i = 0; i < kVec; ++i) s[g][i] += VLLM_SHFL_XOR(s[g][i], 1);
      if (active) {
        // Each thread of the pair stores 4 of the 8 positions.
        const int64_t pos0 = chunk + i0;
#pragma unroll
        for (int g = 0; g < kTile; ++g)
#pragma unroll
          for (int i = 0; i < kVec; ++i) {
            if (i / (kVec / 2) != int(threadIdx.x % 2)) continue;
            const float alibi = slope[g] * float(pos0 + i - span.seq_len + 1);
            s_s[g][i0 + i] = i0 + i < n ? s[g][i] + alibi : kNegInf;
          }
      }
    }
    __syncthreads();
    // Softmax bookkeeping: one warp per head.
    const int lane = threadIdx.x % kVllmWarpSize, warp = threadIdx.x / kVllmWarpSize;
    for (int g = warp; g < kTile; g += kThreads / kVllmWarpSize) {
      float mx = kNegInf;
      for (int i = lane; i < n; i += kVllmWarpSize) mx = fmaxf(mx, s_s[g][i]);
      const float new_max = fmaxf(m_s[g], warp_max(mx));
      float sum = 0.f;
      for (int i = lane; i < n; i += kVllmWarpSize) {
        const float e = __expf(s_s[g][i] - new_max);
        s_s[g][i] = e;
        sum += e;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float corr = __expf(m_s[g] - new_max);
        corr_s[g] = corr;
        l_s[g] = l_s[g] * corr + sum;
        m_s[g] = new_max;
      }
    }
    __syncthreads();
    // Weighted values.
#pragma unroll
    for (int g = 0; g < kTile; ++g) {
      const float corr = corr_s[g];
#pragma unroll
      for (int j = 0; j < kVec; ++j) acc[g][j] *= corr;
    }
    if (row_group < row_groups) {
      // kRows rows in flight per thread: their loads issue before the FMAs.
      constexpr int kRows = kTile >= 8 || sizeof(T) == 4 ? 2 : 4;
      for (int i = row_group; i < n; i += row_groups * kRows) {
        Raw8<T> vv[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int row = i + r * row_groups;
          if (row < n) {
            const int64_t pos = chunk + row;
            const int64_t block = table[pos / bs];
            vv[r] = load_raw8(v_cache + (block * p.num_kv_heads + kv_head) * head_stride +
                              (pos % bs) * hs + d0);
          }
        }
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int row = i + r * row_groups;
          if (row >= n) break;
#pragma unroll
          for (int j = 0; j < kVec; ++j) {
            const float v = raw_at(vv[r], j);
#pragma unroll
            for (int g = 0; g < kTile; ++g) acc[g][j] += s_s[g][row] * v;
          }
        }
      }
    }
    __syncthreads();  // s_s is rewritten next
  }

  // Sum the row groups' partial outputs, laid out [row_group][g][d] over
  // s_s (row_groups * hs <= kChunk floats per head).
  float* partial = &s_s[0][0];
  if (row_group < row_groups) {
#pragma unroll
    for (int g = 0; g < kTile; ++g)
#pragma unroll
      for (int j = 0; j < kVec; ++j)
        partial[(row_group * kTile + g) * hs + d0 + j] = acc[g][j];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < heads * hs; i += kThreads) {
    const int g = i / hs, d = i % hs;
    float total = 0.f;
    for (int r = 0; r < row_groups; ++r) total += partial[(r * kTile + g) * hs + d];
    store_head<T>(p, token, span.seq, head0 + g, part, d, total, m_s[g], l_s[g]);
  }
}

template <typename T>
__global__ void paged_attention_scalar_kernel(PagedAttentionArgs p) {
  __shared__ float q_s[kMaxHeadSize];
  __shared__ float s_s[kScalarChunk];
  __shared__ float red[32];
  const int64_t token = blockIdx.x;
  const int64_t head = blockIdx.y;
  const int64_t part = blockIdx.z;
  const int64_t kv_head = head / (p.num_heads / p.num_kv_heads);
  const int64_t hs = p.head_size, bs = p.block_size;

  const QuerySpan span = query_span(p, token, part);
  const int64_t seq = span.seq, seq_len = span.seq_len, begin = span.begin, end = span.end;
  const T* query = static_cast<const T*>(p.query) + token * p.query_token_stride + head * hs;
  for (int64_t d = threadIdx.x; d < hs; d += kThreads) q_s[d] = to_float(query[d]) * p.scale;
  __syncthreads();

  const T* k_cache = static_cast<const T*>(p.key_cache);
  const T* v_cache = static_cast<const T*>(p.value_cache);
  const int32_t* table = p.block_tables + seq * p.block_table_stride;
  const float slope = p.alibi_slopes ? p.alibi_slopes[head] : 0.f;
  constexpr int kPerThread = (kMaxHeadSize + kThreads - 1) / kThreads;
  float acc[kPerThread] = {};
  float m = kNegInf, l = 0.f;

  for (int64_t chunk = begin; chunk < end; chunk += kScalarChunk) {
    const int64_t n = end - chunk < kScalarChunk ? end - chunk : kScalarChunk;
    float local_max = kNegInf;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const int64_t pos = chunk + i;
      const int64_t block = table[pos / bs];
      const T* k = k_cache + (block * p.num_kv_heads + kv_head) * hs * bs + pos % bs;
      float s = 0.f;
      for (int64_t d = 0; d < hs; ++d) s += q_s[d] * to_float(k[d * bs]);
      if (p.alibi_slopes) s += slope * float(pos - seq_len + 1);
      s_s[i] = s;
      local_max = fmaxf(local_max, s);
    }
    const float chunk_max = block_max(local_max, red);
    const float new_max = fmaxf(m, chunk_max);
    const float correction = __expf(m - new_max);
    float local_sum = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const float e = __expf(s_s[i] - new_max);
      s_s[i] = e;
      local_sum += e;
    }
    const float chunk_sum = block_sum(local_sum);  // also orders s_s writes before reads
    l = l * correction + chunk_sum;
    m = new_max;
    for (int k = 0; k < kPerThread; ++k) {
      const int64_t d = threadIdx.x + k * kThreads;
      if (d >= hs) break;
      float a = acc[k] * correction;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t pos = chunk + i;
        const int64_t block = table[pos / bs];
        a += s_s[i] * to_float(v_cache[((block * p.num_kv_heads + kv_head) * bs + pos % bs) * hs + d]);
      }
      acc[k] = a;
    }
    __syncthreads();  // s_s is rewritten by the next chunk
  }

  for (int k = 0; k < kPerThread; ++k) {
    const int64_t d = threadIdx.x + k * kThreads;
    if (d < hs) store_head<T>(p, token, seq, head, part, d, acc[k], m, l);
  }
}

// v2: out = sum_p w_p tmp_p / sum_p w_p with w_p = l_p exp(m_p - max m).
template <typename T>
__global__ void reduce_partitions_kernel(PagedAttentionArgs p) {
  const int64_t seq = blockIdx.x, head = blockIdx.y;
  const int64_t used = (p.seq_lens[seq] + p.partition_size - 1) / p.partition_size;
  const int64_t base = (seq * p.num_heads + head) * p.max_num_partitions;
  float global_max = kNegInf;
  for (int64_t i = 0; i < used; ++i) global_max = fmaxf(global_max, p.max_logits[base + i]);
  const T* tmp = static_cast<const T*>(p.tmp_out);
  T* out = static_cast<T*>(p.out) + seq * p.out_token_stride + head * p.head_size;
  for (int64_t d = threadIdx.x; d < p.head_size; d += blockDim.x) {
    float acc = 0.f, total = 0.f;
    for (int64_t i = 0; i < used; ++i) {
      if (p.exp_sums[base + i] == 0.f) continue;
      const float w = p.exp_sums[base + i] * __expf(p.max_logits[base + i] - global_max);
      acc += w * to_float(tmp[(base + i) * p.head_size + d]);
      total += w;
    }
    out[d] = from_float<T>(total > 0.f ? acc / total : 0.f);
  }
}

// The main kernel's shape and alignment needs (see the top of this file).
bool vec_kernel_fits(const PagedAttentionArgs& p) {
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return p.block_size % kVec == 0 && p.head_size % kVec == 0 && aligned(p.key_cache) &&
         aligned(p.value_cache) && (p.partition_size <= 0 || p.partition_size % kVec == 0);
}

template <typename T, int kTile>
void launch_vec(const PagedAttentionArgs& p, unsigned parts, vllm_stream_t stream) {
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t tiles = (group + kTile - 1) / kTile;
  const dim3 grid{static_cast<unsigned>(p.num_query_tokens),
                  static_cast<unsigned>(p.num_kv_heads * tiles), parts};
  paged_attention_vec_kernel<T, kTile><<<grid, kThreads, 0, stream>>>(p);
}

template <typename T>
int launch_typed(const PagedAttentionArgs& p, vllm_stream_t stream) {
  const unsigned parts = static_cast<unsigned>(p.partition_size > 0 ? p.max_num_partitions : 1);
  if (vec_kernel_fits(p)) {
    // The smallest power-of-two tile holding the group (at most kMaxTile).
    const int64_t group = p.num_heads / p.num_kv_heads;
    if (group == 1) launch_vec<T, 1>(p, parts, stream);
    else if (group == 2) launch_vec<T, 2>(p, parts, stream);
    else if (group <= 4) launch_vec<T, 4>(p, parts, stream);
    else launch_vec<T, kMaxTile>(p, parts, stream);
  } else {
    const dim3 grid{static_cast<unsigned>(p.num_query_tokens),
                    static_cast<unsigned>(p.num_heads), parts};
    paged_attention_scalar_kernel<T><<<grid, kThreads, 0, stream>>>(p);
  }
  if (p.partition_size > 0) {
    const dim3 reduce_grid{static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.num_heads)};
    reduce_partitions_kernel<T><<<reduce_grid, kThreads, 0, stream>>>(p);
  }
  return int(VLLM_LAUNCH_ERROR());
}

}  // namespace

int launch_paged_attention(const PagedAttentionArgs& p, void* stream) {
  if (p.head_size > kMaxHeadSize) return -1;
  auto s = static_cast<vllm_stream_t>(stream);
  switch (p.dtype) {
    case DType::kFloat32: return launch_typed<float>(p, s);
    case DType::kBFloat16: return launch_typed<vllm_bf16_t>(p, s);
    case DType::kFloat16: return launch_typed<vllm_fp16_t>(p, s);
  }
  return -1;
}

}  // namespace vllm::gpu
