// fused_decode_layers' loop for one decode row (batch-1 decode), in one
// parallel region (decode_one_row.cpp).
#pragma once

#include <array>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>

#include "kernel_table.h"

namespace vllm::cpu_ops {

// Per layer, fused_decode_layers' `weights` hold the input norm, qkv, o,
// the post-attention norm, gate_up and down; its `biases` and `packed` qkv,
// o, gate_up and down (each may be None).
constexpr size_t kWeightsPerLayer = 6;
constexpr size_t kLinearsPerLayer = 4;

// Which kernel a projection of x takes, in both layer loops: packed_linear
// for a weight packed in (k, k+1) pairs (4-D), and packed_linear_gated, the
// gate/up projection fused with its activation, for one packed with its gate
// and up panels interleaved (5-D; the rule Python's gate_up_activation
// applies). Both need bf16 x and the AVX512-BF16 or AVX2 kernels.
bool takes_packed_linear(const at::Tensor& x, const std::optional<at::Tensor>& packed);
bool takes_packed_linear_gated(const at::Tensor& x, const std::optional<at::Tensor>& packed);

// The layers' tensors as fused_decode_layers takes them.
struct DecodeLayerTensors {
  const std::vector<at::Tensor>& weights;
  const std::vector<std::optional<at::Tensor>>& biases;
  const std::vector<std::optional<at::Tensor>>& packed;
  const std::vector<at::Tensor>& key_caches;
  const std::vector<at::Tensor>& value_caches;
};

// The step's attention inputs and the model's shape.
struct DecodeStep {
  const at::Tensor& positions;
  const at::Tensor& cos_sin_cache;
  const at::Tensor& slot_mapping;
  const at::Tensor& block_tables;
  const at::Tensor& seq_lens;
  int64_t block_size, max_seq_len, num_heads, num_kv_heads, head_size;
  double epsilon, scale;
  bool is_neox;
  const std::string& activation;
};

// What the one-row loop keeps from one call to the next of a registered
// set of layers (fused_decode_plan): the verdict on the layers' weights,
// the intermediates' buffers and every projection's checked arguments. Why:
// built per call, they cost ~100 us of a ~8 ms batch-1 step (120 sets of
// arguments read from cold tensor metadata, ~10 allocations).
struct OneRowState {
  std::mutex mutex;                 // one call at a time on the buffers
  std::optional<bool> weights_fit;  // the layers' side of one_row_loop_applies
  bool built = false;
  at::Tensor residual, normed, qkv, attn, o, gated, hidden;
  std::vector<std::array<cpu::LinearArgs, kLinearsPerLayer>> args;
  // per layer: its K and V caches' and its two norm weights' first bytes
  std::vector<const char*> key_caches, value_caches, input_norms, post_norms;
  int64_t cache_block_bytes = 0, norm_bytes = 0;
  bool caches_contiguous = false;
};

// Whether the one-row loop takes this call: one decode row of bf16, every
// projection on our packed kernels (qkv, o and down 4-D pair-packed, gate/up
// 5-D interleaved), the layers of one shape, and more than one thread.
// The verdict on the layers is kept in `state`.
bool one_row_loop_applies(const at::Tensor& hidden, const DecodeLayerTensors& layers,
                          OneRowState& state);

// (hidden, residual) after the last layer, the same bits as the general loop.
// `state` holds the buffers, built at the first call (the layers must be
// the same ones at every call with one state).
std::tuple<at::Tensor, at::Tensor> one_row_layers(const at::Tensor& hidden_in,
                                                  const DecodeLayerTensors& layers,
                                                  const DecodeStep& step, OneRowState& state);

}  // namespace vllm::cpu_ops
