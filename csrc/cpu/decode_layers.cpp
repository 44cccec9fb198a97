// fused_decode_layers: every decoder layer of a Llama-family model for a
// decode step of a few sequences (up to 3 rows: the small-row linear
// kernel's range), in one call.
//
// Why: at batch 1 a layer is ~10 kernels of a few microseconds each, plus
// the weights' streaming; from Python each kernel also pays a module call
// and a dispatcher trip, ~3-4 ms of a ~17 ms step for a 30-layer model.
// Here the same kernels (the ops' own CPU entry points, checks included)
// run back to back from C++. Same kernels, same order, same results as the
// layer-by-layer path (tests/kernels/test_decode_layers.py).
#include <torch/library.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/ones.h>

#include "cpu_ops.h"

namespace vllm::cpu_ops {
namespace {

// Per layer, in `weights`: input norm, qkv, o, post-attention norm,
// gate_up, down; in `biases`: qkv, o, gate_up, down (each may be None).
constexpr size_t kWeightsPerLayer = 6;
constexpr size_t kBiasesPerLayer = 4;

using ActFn = void (*)(at::Tensor&, const at::Tensor&);

ActFn activation_kernel(const std::string& name) {
  if (name == "silu") return &silu_and_mul;
  if (name == "gelu") return &gelu_and_mul;
  if (name == "gelu_pytorch_tanh") return &gelu_tanh_and_mul;
  TORCH_CHECK(false, "fused_decode_layers: activation '", name,
              "' is not one of silu, gelu, gelu_pytorch_tanh");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> fused_decode_layers(
    const at::Tensor& hidden_in, const at::Tensor& positions, const std::vector<at::Tensor>& weights,
    const std::vector<std::optional<at::Tensor>>& biases, const std::vector<at::Tensor>& key_caches,
    const std::vector<at::Tensor>& value_caches, const at::Tensor& cos_sin_cache,
    const at::Tensor& slot_mapping, const at::Tensor& block_tables, const at::Tensor& seq_lens,
    int64_t block_size, int64_t max_seq_len, int64_t num_heads, int64_t num_kv_heads,
    int64_t head_size, double epsilon, double scale, bool is_neox, const std::string& activation) {
  constexpr const char* op = "fused_decode_layers";
  const size_t layers = key_caches.size();
  TORCH_CHECK(layers > 0 && value_caches.size() == layers, op,
              ": one key and one value cache per layer");
  TORCH_CHECK(weights.size() == layers * kWeightsPerLayer, op, ": expected ",
              layers * kWeightsPerLayer, " weights (", kWeightsPerLayer, " per layer), got ",
              weights.size());
  TORCH_CHECK(biases.size() == layers * kBiasesPerLayer, op, ": expected ",
              layers * kBiasesPerLayer, " biases (", kBiasesPerLayer, " per layer), got ",
              biases.size());
  TORCH_CHECK(hidden_in.dim() == 2, op, ": hidden must be [tokens, hidden_size]");
  TORCH_CHECK(seq_lens.size(0) == hidden_in.size(0), op,
              ": decode only: one token per sequence");
  const ActFn act = activation_kernel(activation);
  const int64_t m = hidden_in.size(0);
  const int64_t q_size = num_heads * head_size, kv_size = num_kv_heads * head_size;
  const auto options = hidden_in.options();
  const at::Tensor unit_scale = at::ones({}, at::TensorOptions().dtype(at::kFloat));

  at::Tensor hidden = hidden_in;
  at::Tensor residual;
  for (size_t l = 0; l < layers; ++l) {
    const at::Tensor* w = &weights[l * kWeightsPerLayer];
    const std::optional<at::Tensor>* b = &biases[l * kBiasesPerLayer];
    at::Tensor normed;
    if (l == 0) {
      residual = hidden.clone();
      normed = at::empty_like(hidden);
      rms_norm(normed, hidden, w[0], epsilon);
    } else {
      fused_add_rms_norm(hidden, residual, w[0], epsilon);
      normed = hidden;
    }
    at::Tensor qkv = at::empty({m, w[1].size(0)}, options);
    small_m_linear(qkv, normed, w[1], b[0]);
    at::Tensor q = qkv.narrow(1, 0, q_size);
    std::optional<at::Tensor> k = qkv.narrow(1, q_size, kv_size);
    const at::Tensor v = qkv.narrow(1, q_size + kv_size, kv_size);
    rotary_embedding(positions, q, k, head_size, cos_sin_cache, is_neox);
    at::Tensor key_cache = key_caches[l], value_cache = value_caches[l];
    reshape_and_cache(k->view({m, num_kv_heads, head_size}), v.view({m, num_kv_heads, head_size}),
                      key_cache, value_cache, slot_mapping, "auto", unit_scale, unit_scale);
    at::Tensor attn = at::empty({m, num_heads, head_size}, options);
    paged_attention_v1(attn, q.view({m, num_heads, head_size}), key_cache, value_cache,
                       num_kv_heads, scale, block_tables, seq_lens, block_size, max_seq_len,
                       std::nullopt, "auto", unit_scale, unit_scale, 0, 0, 0, 0, 0);
    at::Tensor attn_out = at::empty({m, w[2].size(0)}, options);
    small_m_linear(attn_out, attn.view({m, q_size}), w[2], b[1]);
    fused_add_rms_norm(attn_out, residual, w[3], epsilon);
    at::Tensor gate_up = at::empty({m, w[4].size(0)}, options);
    small_m_linear(gate_up, attn_out, w[4], b[2]);
    at::Tensor gated = at::empty({m, w[4].size(0) / 2}, options);
    act(gated, gate_up);
    hidden = at::empty({m, w[5].size(0)}, options);
    small_m_linear(hidden, gated, w[5], b[3]);
  }
  return {hidden, residual};
}

TORCH_LIBRARY_FRAGMENT(_C, ops) {
  // Returns (hidden, residual) after the last layer; the final norm is the
  // caller's. CPU only, decode steps of up to 3 sequences.
  ops.def(
      "fused_decode_layers(Tensor hidden, Tensor positions, Tensor[] weights, Tensor?[] biases, "
      "Tensor(a!)[] key_caches, Tensor(b!)[] value_caches, Tensor cos_sin_cache, Tensor slot_mapping, "
      "Tensor block_tables, Tensor seq_lens, int block_size, int max_seq_len, int num_heads, "
      "int num_kv_heads, int head_size, float epsilon, float scale, bool is_neox, "
      "str activation) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(_C, CPU, ops) { ops.impl("fused_decode_layers", &fused_decode_layers); }

}  // namespace vllm::cpu_ops
