// Paged attention on NVIDIA/AMD GPUs: decode (v1; v2 with partitions and a
// reduce) and prefill / chunked prefill, reading the paged cache directly.
//
// One thread block per (query token, query head, partition). Scores: each
// thread takes one context position and dots the query (in shared memory)
// with that token's key column; with the [head_size, block_size] key layout
// consecutive threads read consecutive addresses. Values: each thread owns
// head-size elements of the output and walks the positions. An online
// softmax over chunks of kChunk positions keeps shared memory fixed.
#include "../cuda_compat.h"
#include "attention_launch.h"

namespace vllm::gpu {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = 256;  // context positions scored per round
constexpr int kMaxHeadSize = 256;
constexpr float kNegInf = -__builtin_huge_valf();

__device__ __forceinline__ float block_max(float v, float* scratch) {
  for (int mask = kVllmWarpSize / 2; mask > 0; mask >>= 1) v = fmaxf(v, VLLM_SHFL_XOR(v, mask));
  const int lane = threadIdx.x % kVllmWarpSize, warp = threadIdx.x / kVllmWarpSize;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = kNegInf;
  for (int w = 0; w < kThreads / kVllmWarpSize; ++w) m = fmaxf(m, scratch[w]);
  __syncthreads();
  return m;
}

template <typename T>
__global__ void paged_attention_kernel(PagedAttentionArgs p) {
  __shared__ float q_s[kMaxHeadSize];
  __shared__ float s_s[kChunk];
  __shared__ float red[32];
  const int64_t token = blockIdx.x;
  const int64_t head = blockIdx.y;
  const int64_t part = blockIdx.z;
  const int64_t kv_head = head / (p.num_heads / p.num_kv_heads);
  const int64_t hs = p.head_size, bs = p.block_size;

  // Which sequence this query token belongs to, and its position.
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
  const int64_t visible = seq_len - q_len + q_index + 1;  // causal limit
  int64_t begin = 0, end = visible;
  if (p.partition_size > 0) {
    begin = part * p.partition_size;
    end = begin + p.partition_size < visible ? begin + p.partition_size : visible;
  }
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

  for (int64_t chunk = begin; chunk < end; chunk += kChunk) {
    const int64_t n = end - chunk < kChunk ? end - chunk : kChunk;
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

  const float inv = l > 0.f ? 1.f / l : 0.f;
  if (p.partition_size > 0) {
    const int64_t slot = (seq * p.num_heads + head) * p.max_num_partitions + part;
    if (threadIdx.x == 0) {
      p.max_logits[slot] = m;
      p.exp_sums[slot] = l;
    }
    T* tmp = static_cast<T*>(p.tmp_out) + slot * hs;
    for (int k = 0; k < kPerThread; ++k) {
      const int64_t d = threadIdx.x + k * kThreads;
      if (d < hs) tmp[d] = from_float<T>(acc[k] * inv);
    }
    return;
  }
  T* out = static_cast<T*>(p.out) + token * p.out_token_stride + head * hs;
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t d = threadIdx.x + k * kThreads;
    if (d < hs) out[d] = from_float<T>(acc[k] * inv);
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

template <typename T>
int launch_typed(const PagedAttentionArgs& p, vllm_stream_t stream) {
  const int64_t parts = p.partition_size > 0 ? p.max_num_partitions : 1;
  const dim3 grid{static_cast<unsigned>(p.num_query_tokens), static_cast<unsigned>(p.num_heads),
                  static_cast<unsigned>(parts)};
  paged_attention_kernel<T><<<grid, kThreads, 0, stream>>>(p);
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
