// MLA (DeepSeek's multi-head latent attention) on NVIDIA/AMD GPUs: the
// latent-cache write and absorbed attention, decode and prefill, over the
// paged latent cache [num_blocks, block_size, latent_dim].
//
// One thread block per (query token, tile of kHeads query heads): every head
// attends over the same latents, so a tile reads each cached latent once
// for all its heads. Rounds of kChunk positions: scores by warps (a warp
// per position, lanes splitting the latent, kHeads dot products at once),
// an online softmax per head (a warp per head), then the output update by
// threads over the latent's first v_dim elements (each thread kHeads
// accumulators, the round's latents read again, from cache). Queries,
// outputs and weights live in shared memory: (kHeads * (latent + v_dim +
// kChunk)) floats, 33 KiB at DeepSeek's 576 / 512.
#include "../cuda_compat.h"
#include "mla_launch.h"

namespace vllm::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kHeads = 4;   // query heads per thread block (<= warps per block)
constexpr int kChunk = 64;  // cached positions per round
constexpr float kNegInf = -__builtin_huge_valf();
static_assert(kThreads / 64 >= kHeads, "a warp per head, also with 64-wide wavefronts");

// The sequence whose query rows hold `token` (query_start_loc ascending).
__device__ __forceinline__ int64_t sequence_of(const int32_t* starts, int64_t num_seqs,
                                               int64_t token) {
  int64_t lo = 0, hi = num_seqs - 1;
  while (lo < hi) {  // last s with starts[s] <= token
    const int64_t mid = (lo + hi + 1) / 2;
    if (starts[mid] <= token) lo = mid; else hi = mid - 1;
  }
  return lo;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
mla_attention_kernel(MlaAttentionArgs a) {
  const int64_t token = blockIdx.x;
  const int64_t h0 = int64_t(blockIdx.y) * kHeads;
  const int heads = int(a.num_heads - h0 < kHeads ? a.num_heads - h0 : kHeads);
  const int64_t D = a.latent_dim, V = a.v_dim, bs = a.block_size;
  int64_t seq = token, q_len = 1, first = token;
  if (a.query_start_loc != nullptr) {
    seq = sequence_of(a.query_start_loc, a.num_seqs, token);
    first = a.query_start_loc[seq];
    q_len = a.query_start_loc[seq + 1] - first;
  }
  const int64_t limit = a.seq_lens[seq] - q_len + (token - first) + 1;
  const int32_t* table = a.block_tables + seq * a.block_table_stride;
  const T* cache = static_cast<const T*>(a.kv_cache);

  extern __shared__ float smem[];
  float* q = smem;                  // [kHeads][D], scaled
  float* acc = q + kHeads * D;      // [kHeads][V]
  float* s = acc + kHeads * V;      // [kHeads][kChunk]
  __shared__ float m[kHeads], l[kHeads], corr[kHeads];
  const T* query = static_cast<const T*>(a.query) + token * a.query_token_stride + h0 * D;
  for (int64_t i = threadIdx.x; i < kHeads * D; i += kThreads)
    q[i] = i / D < heads ? to_float(query[i]) * a.scale : 0.f;
  for (int64_t i = threadIdx.x; i < kHeads * V; i += kThreads) acc[i] = 0.f;
  if (threadIdx.x < kHeads) {
    m[threadIdx.x] = kNegInf;
    l[threadIdx.x] = 0.f;
  }
  __syncthreads();

  const int lane = threadIdx.x % kVllmWarpSize, warp = threadIdx.x / kVllmWarpSize;
  constexpr int kWarps = kThreads / kVllmWarpSize;
  for (int64_t p0 = 0; p0 < limit; p0 += kChunk) {
    const int n = int(limit - p0 < kChunk ? limit - p0 : kChunk);
    for (int j = warp; j < n; j += kWarps) {
      const int64_t pos = p0 + j;
      const T* row = cache + (int64_t(table[pos / bs]) * bs + pos % bs) * D;
      float part[kHeads] = {};
      for (int64_t d = lane; d < D; d += kVllmWarpSize) {
        const float c = to_float(row[d]);
#pragma unroll
        for (int h = 0; h < kHeads; ++h) part[h] += q[h * D + d] * c;
      }
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        const float total = warp_sum(part[h]);
        if (lane == 0) s[h * kChunk + j] = total;
      }
    }
    __syncthreads();
    if (warp < kHeads) {  // online softmax of head `warp` over the round
      float mx = kNegInf;
      for (int j = lane; j < n; j += kVllmWarpSize) mx = fmaxf(mx, s[warp * kChunk + j]);
      mx = warp_max(mx);
      const float m_new = fmaxf(m[warp], mx);
      float sum = 0.f;
      for (int j = lane; j < n; j += kVllmWarpSize) {
        const float p = __expf(s[warp * kChunk + j] - m_new);
        s[warp * kChunk + j] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float c = __expf(m[warp] - m_new);  // 0 on the first round
        l[warp] = l[warp] * c + sum;
        m[warp] = m_new;
        corr[warp] = c;
      }
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < V; d += kThreads) {
      float o[kHeads];
#pragma unroll
      for (int h = 0; h < kHeads; ++h) o[h] = acc[h * V + d] * corr[h];
      for (int j = 0; j < n; ++j) {
        const int64_t pos = p0 + j;
        const float c = to_float(cache[(int64_t(table[pos / bs]) * bs + pos % bs) * D + d]);
#pragma unroll
        for (int h = 0; h < kHeads; ++h) o[h] += s[h * kChunk + j] * c;
      }
#pragma unroll
      for (int h = 0; h < kHeads; ++h) acc[h * V + d] = o[h];
    }
    __syncthreads();
  }
  T* out = static_cast<T*>(a.out) + token * a.out_token_stride + h0 * V;
  for (int64_t i = threadIdx.x; i < int64_t(heads) * V; i += kThreads) {
    const float total = l[i / V];
    out[i] = from_float<T>(total > 0.f ? acc[i] / total : 0.f);
  }
}

// E: a same-size integer stand-in for the element type (this only moves bits).
template <typename E>
__global__ void concat_and_cache_mla_kernel(const E* __restrict__ kv_c, const E* __restrict__ k_pe,
                                            E* __restrict__ cache,
                                            const int64_t* __restrict__ slot_mapping,
                                            int64_t lora, int64_t rope, int64_t c_stride,
                                            int64_t pe_stride) {
  const int64_t token = blockIdx.x;
  const int64_t slot = slot_mapping[token];
  if (slot < 0) return;  // padding
  E* dst = cache + slot * (lora + rope);
  for (int64_t i = threadIdx.x; i < lora; i += blockDim.x) dst[i] = kv_c[token * c_stride + i];
  for (int64_t i = threadIdx.x; i < rope; i += blockDim.x)
    dst[lora + i] = k_pe[token * pe_stride + i];
}

template <typename T>
void launch_typed(const MlaAttentionArgs& a, vllm_stream_t stream) {
  const dim3 grid{static_cast<unsigned>(a.num_query_tokens),
                  static_cast<unsigned>((a.num_heads + kHeads - 1) / kHeads)};
  const size_t shared = sizeof(float) * kHeads * (a.latent_dim + a.v_dim + kChunk);
  mla_attention_kernel<T><<<grid, kThreads, shared, stream>>>(a);
}

}  // namespace

int launch_mla_attention(const MlaAttentionArgs& a, void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  switch (a.dtype) {
    case DType::kFloat32: launch_typed<float>(a, s); break;
    case DType::kBFloat16: launch_typed<vllm_bf16_t>(a, s); break;
    case DType::kFloat16: launch_typed<vllm_fp16_t>(a, s); break;
  }
  return int(VLLM_LAUNCH_ERROR());
}

int launch_concat_and_cache_mla(const void* kv_c, const void* k_pe, void* kv_cache,
                                const int64_t* slot_mapping, int64_t num_tokens, int64_t lora,
                                int64_t rope, int64_t c_stride, int64_t pe_stride,
                                int64_t element_size, void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  const dim3 grid{static_cast<unsigned>(num_tokens)};
  if (element_size == 2) {
    concat_and_cache_mla_kernel<uint16_t><<<grid, 256, 0, s>>>(
        static_cast<const uint16_t*>(kv_c), static_cast<const uint16_t*>(k_pe),
        static_cast<uint16_t*>(kv_cache), slot_mapping, lora, rope, c_stride, pe_stride);
  } else if (element_size == 4) {
    concat_and_cache_mla_kernel<uint32_t><<<grid, 256, 0, s>>>(
        static_cast<const uint32_t*>(kv_c), static_cast<const uint32_t*>(k_pe),
        static_cast<uint32_t*>(kv_cache), slot_mapping, lora, rope, c_stride, pe_stride);
  } else {
    return -1;
  }
  return int(VLLM_LAUNCH_ERROR());
}

}  // namespace vllm::gpu
