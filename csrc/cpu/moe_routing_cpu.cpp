// CPU implementations of the MoE routing ops (torch.ops._moe_C.*). Routing
// costs O(tokens x experts) against the experts' O(tokens x k x H x N), so
// these stay plain loops, parallel over tokens where the work is per token.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "../moe/moe_checks.h"

namespace vllm::moe {
namespace {

template <typename T>
float as_float(T v) {
  return static_cast<float>(v);
}

// One token's softmax and top k. `probs` and `taken` are scratch of E.
template <typename In, typename Id>
void topk_softmax_row(const In* logits, int64_t e, int64_t k, float* probs, char* taken,
                      float* weights, Id* ids) {
  float max = -INFINITY;
  for (int64_t i = 0; i < e; ++i) max = std::fmax(max, as_float(logits[i]));
  float sum = 0.f;
  for (int64_t i = 0; i < e; ++i) {
    probs[i] = std::exp(as_float(logits[i]) - max);
    sum += probs[i];
  }
  const float inv = 1.f / sum;
  for (int64_t i = 0; i < e; ++i) taken[i] = 0;
  // k passes of a max scan: k is small (<= 8 in every model served), E <= 256.
  // Strictly greater wins, so ties go to the lower id; NaN scores (a NaN
  // logit) lose every comparison and are taken last, in id order.
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    for (int64_t i = 0; i < e; ++i) {
      if (!taken[i] && (best < 0 || probs[i] > probs[best] || std::isnan(probs[best]))) {
        if (best < 0 || !std::isnan(probs[i])) best = i;
      }
    }
    taken[best] = 1;
    weights[j] = probs[best] * inv;
    ids[j] = static_cast<Id>(best);
  }
}

template <typename In, typename Id>
void topk_softmax_typed(const at::Tensor& gating, int64_t k, float* weights, Id* ids,
                        int32_t* token_expert_indices) {
  const int64_t m = gating.size(0), e = gating.size(1), stride = gating.stride(0);
  const In* logits = gating.data_ptr<In>();
  at::parallel_for(0, m, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> probs(e);
    std::vector<char> taken(e);
    for (int64_t t = begin; t < end; ++t) {
      topk_softmax_row(logits + t * stride, e, k, probs.data(), taken.data(), weights + t * k,
                       ids + t * k);
      for (int64_t j = 0; j < k; ++j) {
        token_expert_indices[t * k + j] = static_cast<int32_t>(j * m + t);
      }
    }
  });
}

template <typename Id>
void topk_softmax_ids(const at::Tensor& gating, int64_t k, at::Tensor& weights, at::Tensor& ids,
                      at::Tensor& token_expert_indices) {
  float* w = weights.data_ptr<float>();
  Id* i = ids.data_ptr<Id>();
  int32_t* tei = token_expert_indices.data_ptr<int32_t>();
  switch (gating.scalar_type()) {
    case at::kFloat: return topk_softmax_typed<float>(gating, k, w, i, tei);
    case at::kBFloat16: return topk_softmax_typed<at::BFloat16>(gating, k, w, i, tei);
    default: return topk_softmax_typed<at::Half>(gating, k, w, i, tei);
  }
}

template <typename Id>
void align_block_size(const at::Tensor& topk_ids, int64_t num_experts, int64_t block_size,
                      int32_t* sorted, int64_t sorted_len, int32_t* blocks, int64_t blocks_len,
                      int32_t* post_pad) {
  const Id* ids = topk_ids.data_ptr<Id>();
  const int64_t n = topk_ids.numel();
  std::vector<int64_t> start(num_experts + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(ids[i] >= 0 && ids[i] < num_experts, "moe_align_block_size: topk_ids holds ",
                "expert id ", static_cast<int64_t>(ids[i]), " outside [0, ", num_experts, ")");
    ++start[ids[i] + 1];
  }
  // start[e]: where expert e's run begins, each run rounded up to whole blocks
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t padded = (start[e + 1] + block_size - 1) / block_size * block_size;
    start[e + 1] = start[e] + padded;
  }
  const int64_t total = start[num_experts];
  for (int64_t i = 0; i < sorted_len; ++i) sorted[i] = static_cast<int32_t>(n);
  for (int64_t b = 0; b < blocks_len; ++b) blocks[b] = -1;
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t b = start[e] / block_size; b < start[e + 1] / block_size; ++b) {
      blocks[b] = static_cast<int32_t>(e);
    }
  }
  // stable: within an expert, the choices keep their flat order
  std::vector<int64_t> next(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < n; ++i) sorted[next[ids[i]]++] = static_cast<int32_t>(i);
  post_pad[0] = static_cast<int32_t>(total);
}

template <typename T>
void sum_over_choices(const T* in, T* out, int64_t m, int64_t k, int64_t h) {
  at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* row = in + t * k * h;
      for (int64_t c = 0; c < h; ++c) {
        float acc = 0.f;
        for (int64_t j = 0; j < k; ++j) acc += static_cast<float>(row[j * h + c]);
        out[t * h + c] = static_cast<T>(acc);
      }
    }
  });
}

}  // namespace

void topk_softmax(at::Tensor& topk_weights, at::Tensor& topk_ids,
                  at::Tensor& token_expert_indices, const at::Tensor& gating_output) {
  const int64_t k = check_topk_softmax(topk_weights, topk_ids, token_expert_indices,
                                       gating_output);
  if (gating_output.size(0) == 0) return;
  if (topk_ids.scalar_type() == at::kInt) {
    topk_softmax_ids<int32_t>(gating_output, k, topk_weights, topk_ids, token_expert_indices);
  } else {
    topk_softmax_ids<int64_t>(gating_output, k, topk_weights, topk_ids, token_expert_indices);
  }
}

void moe_align_block_size(const at::Tensor& topk_ids, int64_t num_experts, int64_t block_size,
                          at::Tensor& sorted_token_ids, at::Tensor& experts_ids,
                          at::Tensor& num_tokens_post_pad) {
  check_moe_align(topk_ids, num_experts, block_size, sorted_token_ids, experts_ids,
                  num_tokens_post_pad);
  int32_t* sorted = sorted_token_ids.data_ptr<int32_t>();
  int32_t* blocks = experts_ids.data_ptr<int32_t>();
  int32_t* post_pad = num_tokens_post_pad.data_ptr<int32_t>();
  if (topk_ids.scalar_type() == at::kInt) {
    align_block_size<int32_t>(topk_ids, num_experts, block_size, sorted,
                              sorted_token_ids.numel(), blocks, experts_ids.numel(), post_pad);
  } else {
    align_block_size<int64_t>(topk_ids, num_experts, block_size, sorted,
                              sorted_token_ids.numel(), blocks, experts_ids.numel(), post_pad);
  }
}

void moe_sum(const at::Tensor& input, at::Tensor& output) {
  check_moe_sum(input, output);
  const int64_t m = input.size(0), k = input.size(1), h = input.size(2);
  if (m == 0 || h == 0) return;
  switch (input.scalar_type()) {
    case at::kFloat:
      return sum_over_choices(input.data_ptr<float>(), output.data_ptr<float>(), m, k, h);
    case at::kBFloat16:
      return sum_over_choices(input.data_ptr<at::BFloat16>(), output.data_ptr<at::BFloat16>(),
                              m, k, h);
    default:
      return sum_over_choices(input.data_ptr<at::Half>(), output.data_ptr<at::Half>(), m, k, h);
  }
}

}  // namespace vllm::moe

TORCH_LIBRARY_IMPL(_moe_C, CPU, ops) {
  ops.impl("topk_softmax", &vllm::moe::topk_softmax);
  ops.impl("moe_align_block_size", &vllm::moe::moe_align_block_size);
  ops.impl("moe_sum", &vllm::moe::moe_sum);
}
