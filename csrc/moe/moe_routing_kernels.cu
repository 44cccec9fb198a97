// MoE routing on the GPU: topk_softmax (a thread per token: E <= a few
// hundred, k <= 8, routing is a sliver of the layer), moe_align_block_size
// (one block; counts by shared-memory atomics, then a stable scatter tile by
// tile, each id ranked among the earlier equal ids of its tile, so the
// order within an expert is the ids' order, as on CPU), moe_sum (a block
// per token).
#include "../cuda_compat.h"
#include "moe_routing_launch.h"

namespace vllm::gpu {
namespace {

template <typename T, typename Id>
__global__ void topk_softmax_kernel(float* __restrict__ weights, Id* __restrict__ ids,
                                    int32_t* __restrict__ token_expert,
                                    const T* __restrict__ gating, int64_t m, int64_t e, int64_t k,
                                    int64_t stride) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= m) return;
  const T* row = gating + t * stride;
  float max = -INFINITY;
  for (int64_t i = 0; i < e; ++i) max = fmaxf(max, to_float(row[i]));
  float sum = 0.f;
  for (int64_t i = 0; i < e; ++i) sum += expf(to_float(row[i]) - max);
  const float inv = 1.f / sum;
  // k passes: the j-th pass takes the best expert below the previous pick
  // in (probability desc, id asc) order; ties go to the lower id.
  float prev_p = INFINITY;
  int64_t prev_id = -1;
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    float best_p = -1.f;
    for (int64_t i = 0; i < e; ++i) {
      const float p = expf(to_float(row[i]) - max);
      const bool after_prev = p < prev_p || (p == prev_p && i > prev_id);
      if (after_prev && (best < 0 || p > best_p)) {
        best = i;
        best_p = p;
      }
    }
    if (best < 0) best = 0;  // NaN scores: nothing compares; keep ids in range
    weights[t * k + j] = best_p * inv;
    ids[t * k + j] = Id(best);
    token_expert[t * k + j] = int32_t(j * m + t);
    prev_p = best_p;
    prev_id = best;
  }
}

template <typename T, typename Id>
int topk_typed(float* weights, void* ids, int32_t* token_expert, const void* gating, int64_t m,
               int64_t e, int64_t k, int64_t stride, vllm_stream_t stream) {
  const int threads = 128;
  const unsigned blocks = unsigned((m + threads - 1) / threads);
  topk_softmax_kernel<T, Id><<<blocks, threads, 0, stream>>>(
      weights, static_cast<Id*>(ids), token_expert, static_cast<const T*>(gating), m, e, k,
      stride);
  return int(VLLM_LAUNCH_ERROR());
}

template <typename T>
int topk_ids_typed(float* weights, void* ids, bool ids64, int32_t* token_expert,
                   const void* gating, int64_t m, int64_t e, int64_t k, int64_t stride,
                   vllm_stream_t stream) {
  return ids64 ? topk_typed<T, int64_t>(weights, ids, token_expert, gating, m, e, k, stride,
                                        stream)
               : topk_typed<T, int32_t>(weights, ids, token_expert, gating, m, e, k, stride,
                                        stream);
}

constexpr int kAlignThreads = 512;

template <typename Id>
__global__ void align_kernel(const Id* __restrict__ ids, int64_t numel, int64_t experts,
                             int64_t block_size, int32_t* __restrict__ sorted, int64_t sorted_len,
                             int32_t* __restrict__ experts_ids, int64_t blocks_len,
                             int32_t* __restrict__ post_pad) {
  extern __shared__ int32_t shared[];
  int32_t* start = shared;                  // [experts + 1]: padded run starts
  int32_t* running = start + experts + 1;   // [experts]: written so far
  int32_t* tile = running + experts;        // [blockDim.x]: the tile's ids
  const int tid = threadIdx.x, threads = blockDim.x;
  for (int64_t e = tid; e <= experts; e += threads) start[e] = 0;
  __syncthreads();
  for (int64_t i = tid; i < numel; i += threads) {
    const int64_t e = int64_t(ids[i]);
    if (e >= 0 && e < experts) atomicAdd(&start[e + 1], 1);
  }
  __syncthreads();
  if (tid == 0) {
    for (int64_t e = 0; e < experts; ++e) {
      const int32_t padded = int32_t((start[e + 1] + block_size - 1) / block_size * block_size);
      start[e + 1] = start[e] + padded;
    }
    *post_pad = start[experts];
  }
  __syncthreads();
  for (int64_t i = tid; i < sorted_len; i += threads) sorted[i] = int32_t(numel);
  for (int64_t b = tid; b < blocks_len; b += threads) experts_ids[b] = -1;
  __syncthreads();
  for (int64_t e = tid; e < experts; e += threads) {
    running[e] = 0;
    for (int64_t b = start[e] / block_size; b < start[e + 1] / block_size; ++b) {
      experts_ids[b] = int32_t(e);
    }
  }
  __syncthreads();
  for (int64_t t0 = 0; t0 < numel; t0 += threads) {
    const int64_t i = t0 + tid;
    int32_t e = -1;
    if (i < numel) {
      const int64_t raw = int64_t(ids[i]);
      e = raw >= 0 && raw < experts ? int32_t(raw) : -1;
    }
    tile[tid] = e;
    __syncthreads();
    if (e >= 0) {
      int32_t rank = 0;
      for (int j = 0; j < tid; ++j) rank += tile[j] == e;
      sorted[start[e] + running[e] + rank] = int32_t(i);
    }
    __syncthreads();
    for (int64_t x = tid; x < experts; x += threads) {
      int32_t hits = 0;
      for (int j = 0; j < threads; ++j) hits += tile[j] == int32_t(x);
      running[x] += hits;
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void moe_sum_kernel(T* __restrict__ out, const T* __restrict__ in, int64_t k,
                               int64_t h) {
  const int64_t t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < h; c += blockDim.x) {
    float acc = 0.f;
    for (int64_t j = 0; j < k; ++j) acc += to_float(in[(t * k + j) * h + c]);
    out[t * h + c] = from_float<T>(acc);
  }
}

template <typename T>
int moe_sum_typed(void* out, const void* in, int64_t m, int64_t k, int64_t h,
                  vllm_stream_t stream) {
  const int threads = h < 1024 ? int((h + 31) / 32 * 32) : 1024;
  moe_sum_kernel<T><<<unsigned(m), threads, 0, stream>>>(static_cast<T*>(out),
                                                          static_cast<const T*>(in), k, h);
  return int(VLLM_LAUNCH_ERROR());
}

}  // namespace

int launch_topk_softmax(float* weights, void* ids, bool ids64, int32_t* token_expert,
                        const void* gating, int64_t m, int64_t e, int64_t k,
                        int64_t gating_row_stride, DType dtype, void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  switch (dtype) {
    case DType::kFloat32:
      return topk_ids_typed<float>(weights, ids, ids64, token_expert, gating, m, e, k,
                                   gating_row_stride, s);
    case DType::kBFloat16:
      return topk_ids_typed<vllm_bf16_t>(weights, ids, ids64, token_expert, gating, m, e, k,
                                         gating_row_stride, s);
    case DType::kFloat16:
      return topk_ids_typed<vllm_fp16_t>(weights, ids, ids64, token_expert, gating, m, e, k,
                                         gating_row_stride, s);
  }
  return -1;
}

int launch_moe_align_block_size(const void* ids, bool ids64, int64_t numel, int64_t num_experts,
                                int64_t block_size, int32_t* sorted, int64_t sorted_len,
                                int32_t* experts_ids, int64_t blocks_len, int32_t* post_pad,
                                void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  const size_t shared = sizeof(int32_t) * size_t(2 * num_experts + 1 + kAlignThreads);
  if (ids64) {
    align_kernel<int64_t><<<1, kAlignThreads, shared, s>>>(
        static_cast<const int64_t*>(ids), numel, num_experts, block_size, sorted, sorted_len,
        experts_ids, blocks_len, post_pad);
  } else {
    align_kernel<int32_t><<<1, kAlignThreads, shared, s>>>(
        static_cast<const int32_t*>(ids), numel, num_experts, block_size, sorted, sorted_len,
        experts_ids, blocks_len, post_pad);
  }
  return int(VLLM_LAUNCH_ERROR());
}

int launch_moe_sum(void* output, const void* input, int64_t m, int64_t k, int64_t h, DType dtype,
                   void* stream) {
  auto s = static_cast<vllm_stream_t>(stream);
  switch (dtype) {
    case DType::kFloat32: return moe_sum_typed<float>(output, input, m, k, h, s);
    case DType::kBFloat16: return moe_sum_typed<vllm_bf16_t>(output, input, m, k, h, s);
    case DType::kFloat16: return moe_sum_typed<vllm_fp16_t>(output, input, m, k, h, s);
  }
  return -1;
}

}  // namespace vllm::gpu
