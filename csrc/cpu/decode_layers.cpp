// fused_decode_layers: every decoder layer of a Llama-family model for a
// step, in one call: decode steps (one token per sequence), and with
// query_start_loc prefill and mixed steps too.
//
// Why: at batch 1 a layer is ~10 kernels of a few microseconds each, plus
// the weights' streaming; from Python each kernel also pays a module call
// and a dispatcher trip, ~3-4 ms of a ~17 ms step for a 30-layer model.
// Here the same kernels (the ops' own CPU entry points, checks included)
// run back to back from C++. Same kernels, same order, same results as the
// layer-by-layer path (tests/kernels/test_decode_layers.py). One bf16
// decode row on our packed kernels (batch-1 decode) runs instead in one
// parallel region for the whole call (decode_one_row.cpp).
#include <torch/library.h>

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/ones.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "cpu_ops.h"
#include "decode_one_row.h"
#include "kernel_table.h"

namespace vllm::cpu_ops {
namespace {

using ActFn = void (*)(at::Tensor&, const at::Tensor&);

ActFn activation_kernel(const std::string& name) {
  if (name == "silu") return &silu_and_mul;
  if (name == "gelu") return &gelu_and_mul;
  if (name == "gelu_pytorch_tanh") return &gelu_tanh_and_mul;
  TORCH_CHECK(false, "fused_decode_layers: activation '", name,
              "' is not one of silu, gelu, gelu_pytorch_tanh");
}

// oneDNN's GEMM on a weight packed at load (torch's mkldnn::_linear_pointwise,
// the op Python's apply_linear calls), through the dispatcher.
at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& packed,
                         const std::optional<at::Tensor>& bias) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  torch::jit::Stack stack;
  stack.emplace_back(x);
  stack.emplace_back(packed);
  stack.emplace_back(bias.has_value() ? c10::IValue(*bias) : c10::IValue());
  stack.emplace_back(std::string("none"));
  stack.emplace_back(c10::List<std::optional<at::Scalar>>());
  stack.emplace_back(std::string(""));
  op.callBoxed(&stack);
  return stack.back().toTensor();
}

// x W^T + b by the path Python's apply_linear takes for the same rows (so
// both paths give the same bits): quant_linear on a quantized weight;
// packed_linear on a weight packed in our
// pair layout (bf16, AVX512-BF16 or AVX2 variant active); else the small-row kernel
// up to `small_m_max_rows`, oneDNN on its packed weight, at::linear. (A
// gate/up weight's interleaved 5-D copy goes to packed_linear_gated instead,
// takes_packed_linear_gated; both paths take it whenever packed_linear exists.)
//
// `out` ([rows, n], the call's workspace) receives the result where our
// kernels write it; oneDNN and at::linear return their own tensor.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& packed,
                  int64_t small_m_max_rows, int64_t int8_max_rows, at::Tensor out) {
  if (packed.has_value() && !packed->is_mkldnn() && packed->scalar_type() == at::kByte) {
    // a quantized weight packed for quant_linear ([panels, k / group, 192 +
    // 48 group bits / 8]); `weight` holds its shape only
    const int64_t k = weight.size(1), group = k / packed->size(1);
    const int64_t bits = (packed->size(2) - cpu::kQuantHeaderBytes) * 8 / (cpu::kQuantPanel * group);
    quant_linear(out, x.stride(1) == 1 ? x : x.contiguous(), *packed, bits, group, bias,
                 int8_max_rows);
    return out;
  }
  if (takes_packed_linear(x, packed)) {
    packed_linear(out, x.stride(1) == 1 ? x : x.contiguous(), *packed, bias);
    return out;
  }
  if (x.size(0) <= small_m_max_rows) {
    small_m_linear(out, x, weight, bias);
    return out;
  }
  if (packed.has_value() && packed->is_mkldnn() && x.scalar_type() == weight.scalar_type()) {
    return onednn_linear(x, *packed, bias);
  }
  return at::linear(x, weight, bias);
}


// One intermediate's buffer for a whole call, reused by every layer (a
// model's layers share their shapes; a new shape, as the last layer's
// output rows, allocates anew). Why: a batch-1 step made ~150 allocations
// here, each a malloc, a free and a TensorImpl on cold allocator state just
// after a weight stream.
struct Workspace {
  at::Tensor tensor;
  const at::Tensor& get(at::IntArrayRef sizes, const at::TensorOptions& options) {
    if (!tensor.defined() || tensor.sizes() != sizes) tensor = at::empty(sizes, options);
    return tensor;
  }
};

// A model's layers and constants as fused_decode_layers takes them: built
// for one call by that op, or registered once (fused_decode_plan) and named
// by id in fused_decode_planned.
struct DecodePlan {
  DecodePlan(const std::vector<at::Tensor>& weights,
             const std::vector<std::optional<at::Tensor>>& biases,
             const std::vector<std::optional<at::Tensor>>& packed, int64_t small_m_max_rows,
             const std::vector<at::Tensor>& key_caches,
             const std::vector<at::Tensor>& value_caches, const at::Tensor& cos_sin_cache,
             int64_t num_heads, int64_t num_kv_heads, int64_t head_size, double epsilon,
             double scale, bool is_neox, const std::string& activation)
      : weights(weights), biases(biases), packed(packed), key_caches(key_caches),
        value_caches(value_caches), cos_sin_cache(cos_sin_cache),
        small_m_max_rows(small_m_max_rows), num_heads(num_heads), num_kv_heads(num_kv_heads),
        head_size(head_size), epsilon(epsilon), scale(scale), is_neox(is_neox),
        activation(activation) {}

  std::vector<at::Tensor> weights;
  std::vector<std::optional<at::Tensor>> biases, packed;
  std::vector<at::Tensor> key_caches, value_caches;
  at::Tensor cos_sin_cache;
  int64_t small_m_max_rows, num_heads, num_kv_heads, head_size;
  double epsilon, scale;
  bool is_neox;
  std::string activation;
  // the model's ends, for steps that fold them in: token ids -> rows of
  // `embedding`, and the final norm (with its own epsilon) after the layers
  std::optional<at::Tensor> embedding, final_norm;
  double final_norm_eps = 0;
  OneRowState one_row;  // the one-row loop's buffers, kept between steps
};

}  // namespace

// The layers of `plan` for one step (fused_decode_layers' semantics).
std::tuple<at::Tensor, at::Tensor> decode_layers(
    DecodePlan& plan, const at::Tensor& hidden_in, const at::Tensor& positions,
    const at::Tensor& slot_mapping, const at::Tensor& block_tables, const at::Tensor& seq_lens,
    int64_t block_size, int64_t max_seq_len, const std::optional<at::Tensor>& query_start_loc,
    const std::optional<at::Tensor>& output_rows,
    const std::optional<at::Tensor>& output_query_start_loc, int64_t quant_int8_max_rows) {
  constexpr const char* op = "fused_decode_layers";
  const std::vector<at::Tensor>& weights = plan.weights;
  const std::vector<std::optional<at::Tensor>>& biases = plan.biases;
  const std::vector<std::optional<at::Tensor>>& packed = plan.packed;
  const std::vector<at::Tensor>& key_caches = plan.key_caches;
  const std::vector<at::Tensor>& value_caches = plan.value_caches;
  const at::Tensor& cos_sin_cache = plan.cos_sin_cache;
  const int64_t small_m_max_rows = plan.small_m_max_rows, num_heads = plan.num_heads,
                num_kv_heads = plan.num_kv_heads, head_size = plan.head_size;
  const double epsilon = plan.epsilon, scale = plan.scale;
  const bool is_neox = plan.is_neox;
  const std::string& activation = plan.activation;
  const size_t layers = key_caches.size();
  TORCH_CHECK(layers > 0 && value_caches.size() == layers, op,
              ": one key and one value cache per layer");
  TORCH_CHECK(weights.size() == layers * kWeightsPerLayer, op, ": expected ",
              layers * kWeightsPerLayer, " weights (", kWeightsPerLayer, " per layer), got ",
              weights.size());
  TORCH_CHECK(biases.size() == layers * kLinearsPerLayer, op, ": expected ",
              layers * kLinearsPerLayer, " biases (", kLinearsPerLayer, " per layer), got ",
              biases.size());
  TORCH_CHECK(packed.size() == layers * kLinearsPerLayer, op, ": expected ",
              layers * kLinearsPerLayer, " packed weights (", kLinearsPerLayer,
              " per layer, each may be None), got ", packed.size());
  TORCH_CHECK(hidden_in.dim() == 2, op, ": hidden must be [tokens, hidden_size]");
  const bool prefill = query_start_loc.has_value();
  TORCH_CHECK(prefill || seq_lens.size(0) == hidden_in.size(0), op,
              ": without query_start_loc, a decode step: one token per sequence");
  TORCH_CHECK(output_rows.has_value() == output_query_start_loc.has_value() &&
                  (!output_rows.has_value() || prefill),
              op, ": output_rows and output_query_start_loc come together, with query_start_loc");
  const ActFn act = activation_kernel(activation);
  const DecodeLayerTensors tensors{weights, biases, packed, key_caches, value_caches};
  if (!prefill && one_row_loop_applies(hidden_in, tensors, plan.one_row)) {
    return one_row_layers(hidden_in, tensors,
                          DecodeStep{positions, cos_sin_cache, slot_mapping, block_tables,
                                     seq_lens, block_size, max_seq_len, num_heads, num_kv_heads,
                                     head_size, epsilon, scale, is_neox, activation},
                          plan.one_row);
  }
  const int64_t m = hidden_in.size(0);
  const int64_t q_size = num_heads * head_size, kv_size = num_kv_heads * head_size;
  const auto options = hidden_in.options();
  const at::Tensor unit_scale = at::ones({}, at::TensorOptions().dtype(at::kFloat));

  at::Tensor hidden = hidden_in;
  at::Tensor residual;
  // the caller's hidden_in is never written: the down projection's output
  // (the next layer's hidden, normalised in place) has its own buffer, free
  // again once that layer's qkv projection has read it
  Workspace qkv_ws, attn_ws, o_ws, gate_up_ws, gated_ws, down_ws;
  for (size_t l = 0; l < layers; ++l) {
    const at::Tensor* w = &weights[l * kWeightsPerLayer];
    const std::optional<at::Tensor>* b = &biases[l * kLinearsPerLayer];
    const std::optional<at::Tensor>* p = &packed[l * kLinearsPerLayer];
    at::Tensor normed;
    if (l == 0) {
      residual = hidden.clone();
      normed = at::empty_like(hidden);
      rms_norm(normed, hidden, w[0], epsilon);
    } else {
      fused_add_rms_norm(hidden, residual, w[0], epsilon);
      normed = hidden;
    }
    const at::Tensor qkv = linear(normed, w[1], b[0], p[0], small_m_max_rows, quant_int8_max_rows,
                                  qkv_ws.get({m, w[1].size(0)}, options));
    at::Tensor q = qkv.narrow(1, 0, q_size);
    std::optional<at::Tensor> k = qkv.narrow(1, q_size, kv_size);
    const at::Tensor v = qkv.narrow(1, q_size + kv_size, kv_size);
    rotary_embedding(positions, q, k, head_size, cos_sin_cache, is_neox);
    at::Tensor key_cache = key_caches[l], value_cache = value_caches[l];
    reshape_and_cache(k->view({m, num_kv_heads, head_size}), v.view({m, num_kv_heads, head_size}),
                      key_cache, value_cache, slot_mapping, "auto", unit_scale, unit_scale);
    // The last layer serves only the rows the caller reads, if it names them
    // (every row's keys and values are cached above), as the layer modules do.
    const bool outputs_only = l + 1 == layers && output_rows.has_value();
    const at::Tensor q_rows = outputs_only ? q.index_select(0, *output_rows) : q;
    const int64_t rows = q_rows.size(0);
    at::Tensor attn = attn_ws.get({rows, num_heads, head_size}, options);
    if (prefill) {
      paged_attention_prefill(attn, q_rows.view({rows, num_heads, head_size}), key_cache,
                              value_cache, num_kv_heads, scale, block_tables,
                              outputs_only ? *output_query_start_loc : *query_start_loc,
                              seq_lens, std::nullopt, "auto", unit_scale, unit_scale);
    } else {
      paged_attention_v1(attn, q.view({m, num_heads, head_size}), key_cache, value_cache,
                         num_kv_heads, scale, block_tables, seq_lens, block_size, max_seq_len,
                         std::nullopt, "auto", unit_scale, unit_scale, 0, 0, 0, 0, 0);
    }
    if (outputs_only) residual = residual.index_select(0, *output_rows);
    at::Tensor attn_out = linear(attn.view({rows, q_size}), w[2], b[1], p[1], small_m_max_rows,
                                 quant_int8_max_rows, o_ws.get({rows, w[2].size(0)}, options));
    fused_add_rms_norm(attn_out, residual, w[3], epsilon);
    at::Tensor gated = gated_ws.get({rows, w[4].size(0) / 2}, options);
    if (takes_packed_linear_gated(attn_out, p[2])) {
      packed_linear_gated(gated, attn_out, *p[2], b[2], activation);
    } else {
      act(gated, linear(attn_out, w[4], b[2], p[2], small_m_max_rows, quant_int8_max_rows,
                        gate_up_ws.get({rows, w[4].size(0)}, options)));
    }
    hidden = linear(gated, w[5], b[3], p[3], small_m_max_rows, quant_int8_max_rows,
                    down_ws.get({rows, w[5].size(0)}, options));
  }
  return {hidden, residual};
}

std::tuple<at::Tensor, at::Tensor> fused_decode_layers(
    const at::Tensor& hidden_in, const at::Tensor& positions, const std::vector<at::Tensor>& weights,
    const std::vector<std::optional<at::Tensor>>& biases,
    const std::vector<std::optional<at::Tensor>>& packed, int64_t small_m_max_rows,
    const std::vector<at::Tensor>& key_caches,
    const std::vector<at::Tensor>& value_caches, const at::Tensor& cos_sin_cache,
    const at::Tensor& slot_mapping, const at::Tensor& block_tables, const at::Tensor& seq_lens,
    int64_t block_size, int64_t max_seq_len, int64_t num_heads, int64_t num_kv_heads,
    int64_t head_size, double epsilon, double scale, bool is_neox, const std::string& activation,
    const std::optional<at::Tensor>& query_start_loc, const std::optional<at::Tensor>& output_rows,
    const std::optional<at::Tensor>& output_query_start_loc, int64_t quant_int8_max_rows) {
  DecodePlan plan(weights, biases, packed, small_m_max_rows, key_caches, value_caches,
                  cos_sin_cache, num_heads, num_kv_heads, head_size, epsilon, scale, is_neox,
                  activation);
  return decode_layers(plan, hidden_in, positions, slot_mapping, block_tables, seq_lens,
                       block_size, max_seq_len, query_start_loc, output_rows,
                       output_query_start_loc, quant_int8_max_rows);
}

namespace {

// A model's layers registered once (fused_decode_plan), so that a step
// passes only its own inputs. Why: as a call's arguments, the ~480 tensors
// of SmolLM2's 30 layers cost ~90 us to convert from Python lists and ~95
// us to release, each a reference count on cold tensor metadata, ~2% of a
// batch-1 step; and the one-row loop keeps its buffers and checked
// arguments here (OneRowState).
std::mutex plans_mutex;
std::unordered_map<int64_t, std::shared_ptr<DecodePlan>> plans;
int64_t next_plan_id = 1;

std::shared_ptr<DecodePlan> find_plan(int64_t id) {
  std::lock_guard<std::mutex> lock(plans_mutex);
  const auto it = plans.find(id);
  TORCH_CHECK(it != plans.end(), "fused_decode_planned: no plan ", id,
              " (never made, or released by fused_decode_plan_release)");
  return it->second;
}

}  // namespace

int64_t fused_decode_plan(const std::vector<at::Tensor>& weights,
                          const std::vector<std::optional<at::Tensor>>& biases,
                          const std::vector<std::optional<at::Tensor>>& packed,
                          int64_t small_m_max_rows, const std::vector<at::Tensor>& key_caches,
                          const std::vector<at::Tensor>& value_caches,
                          const at::Tensor& cos_sin_cache, int64_t num_heads,
                          int64_t num_kv_heads, int64_t head_size, double epsilon, double scale,
                          bool is_neox, const std::string& activation,
                          const std::optional<at::Tensor>& embedding,
                          const std::optional<at::Tensor>& final_norm, double final_norm_eps) {
  activation_kernel(activation);  // a bad name fails here, not at the first step
  TORCH_CHECK(!embedding.has_value() ||
                  (embedding->dim() == 2 && embedding->stride(1) == 1 &&
                   embedding->scalar_type() == weights[0].scalar_type()),
              "fused_decode_plan: the embedding must be a [vocab, hidden] table with contiguous "
              "rows, in the layers' dtype");
  auto plan = std::make_shared<DecodePlan>(weights, biases, packed, small_m_max_rows, key_caches,
                                           value_caches, cos_sin_cache, num_heads, num_kv_heads,
                                           head_size, epsilon, scale, is_neox, activation);
  plan->embedding = embedding;
  plan->final_norm = final_norm;
  plan->final_norm_eps = final_norm_eps;
  std::lock_guard<std::mutex> lock(plans_mutex);
  const int64_t id = next_plan_id++;
  plans.emplace(id, std::move(plan));
  return id;
}

void fused_decode_plan_release(int64_t id) {
  std::lock_guard<std::mutex> lock(plans_mutex);
  plans.erase(id);
}

std::tuple<at::Tensor, at::Tensor> fused_decode_planned(
    int64_t id, const at::Tensor& hidden, const at::Tensor& positions,
    const at::Tensor& slot_mapping, const at::Tensor& block_tables, const at::Tensor& seq_lens,
    int64_t block_size, int64_t max_seq_len, const std::optional<at::Tensor>& query_start_loc,
    const std::optional<at::Tensor>& output_rows,
    const std::optional<at::Tensor>& output_query_start_loc, int64_t quant_int8_max_rows,
    bool embed, bool final_norm) {
  const std::shared_ptr<DecodePlan> plan = find_plan(id);  // alive to the end, released or not
  const DecodePlan& p = *plan;
  at::Tensor rows = hidden;
  if (embed) {
    // `hidden` holds the token ids: their rows of the table (a copy, as
    // nn.Embedding's)
    TORCH_CHECK(p.embedding.has_value(), "fused_decode_planned: embed=True on a plan made "
                                         "without an embedding");
    TORCH_CHECK(hidden.dim() == 1 && hidden.scalar_type() == at::kLong,
                "fused_decode_planned: with embed=True, hidden holds int64 token ids");
    const at::Tensor& table = *p.embedding;
    const int64_t n = hidden.size(0), vocab = table.size(0), width = table.size(1);
    const int64_t row_bytes = width * table.element_size();
    rows = at::empty({n, width}, table.options());
    const at::Tensor ids = hidden.contiguous();
    const int64_t* id = ids.data_ptr<int64_t>();
    const char* src = static_cast<const char*>(table.data_ptr());
    char* dst = static_cast<char*>(rows.data_ptr());
    for (int64_t i = 0; i < n; ++i) {
      TORCH_CHECK(id[i] >= 0 && id[i] < vocab, "fused_decode_planned: token id ", id[i],
                  " is outside the embedding's ", vocab, " rows");
      std::memcpy(dst + i * row_bytes, src + id[i] * table.stride(0) * table.element_size(),
                  row_bytes);
    }
  }
  TORCH_CHECK(!final_norm || p.final_norm.has_value(),
              "fused_decode_planned: final_norm=True on a plan made without a final norm");
  auto [out, residual] =
      decode_layers(*plan, rows, positions, slot_mapping, block_tables, seq_lens, block_size,
                    max_seq_len, query_start_loc, output_rows, output_query_start_loc,
                    quant_int8_max_rows);
  if (final_norm) fused_add_rms_norm(out, residual, *p.final_norm, p.final_norm_eps);
  return {out, residual};
}

TORCH_LIBRARY_FRAGMENT(_C, ops) {
  // fused_decode_layers' layers and model constants registered once; the
  // returned id names them in fused_decode_planned (a step's inputs only,
  // otherwise the same op: the caches it writes are the registered ones)
  // until fused_decode_plan_release. With an embedding and a final norm
  // registered, a step may fold them in: embed=True takes token ids in
  // `hidden`, final_norm=True returns the normalised hidden states (and
  // their sum with the residual), as the model's forward would.
  ops.def(
      "fused_decode_plan(Tensor[] weights, Tensor?[] biases, Tensor?[] packed, "
      "int small_m_max_rows, Tensor[] key_caches, Tensor[] value_caches, Tensor cos_sin_cache, "
      "int num_heads, int num_kv_heads, int head_size, float epsilon, float scale, bool is_neox, "
      "str activation, Tensor? embedding=None, Tensor? final_norm=None, "
      "float final_norm_eps=0.0) -> int");
  ops.def("fused_decode_plan_release(int plan) -> ()");
  ops.def(
      "fused_decode_planned(int plan, Tensor hidden, Tensor positions, Tensor slot_mapping, "
      "Tensor block_tables, Tensor seq_lens, int block_size, int max_seq_len, "
      "Tensor? query_start_loc=None, Tensor? output_rows=None, "
      "Tensor? output_query_start_loc=None, int quant_int8_max_rows=1073741824, "
      "bool embed=False, bool final_norm=False) -> (Tensor, Tensor)");
}

// Registered without a dispatch key: they take no tensor to dispatch on
// (the planned op's hidden does, but its plan's weights may be oneDNN ones).
TORCH_LIBRARY_IMPL(_C, CatchAll, ops) {
  ops.impl("fused_decode_plan", &fused_decode_plan);
  ops.impl("fused_decode_plan_release", &fused_decode_plan_release);
}
TORCH_LIBRARY_IMPL(_C, CPU, ops) { ops.impl("fused_decode_planned", &fused_decode_planned); }

TORCH_LIBRARY_FRAGMENT(_C, ops) {
  // Returns (hidden, residual) after the last layer; the final norm is the
  // caller's. CPU only. Without query_start_loc a decode step (one token per
  // sequence, paged_attention_v1); with it any step (prefill chunks too,
  // paged_attention_prefill), and with output_rows / output_query_start_loc
  // (AttentionMetadata's) the last layer's attention, MLP and the returned
  // rows are those rows only. quant_int8_max_rows: quant_linear's, for
  // weights quantized. `packed`: qkv, o, gate_up, down per layer
  // packed for packed_linear (used for any rows) or by oneDNN (used above
  // `small_m_max_rows` rows), or None, as Python's Linear does.
  ops.def(
      "fused_decode_layers(Tensor hidden, Tensor positions, Tensor[] weights, Tensor?[] biases, "
      "Tensor?[] packed, int small_m_max_rows, "
      "Tensor(a!)[] key_caches, Tensor(b!)[] value_caches, Tensor cos_sin_cache, Tensor slot_mapping, "
      "Tensor block_tables, Tensor seq_lens, int block_size, int max_seq_len, int num_heads, "
      "int num_kv_heads, int head_size, float epsilon, float scale, bool is_neox, "
      "str activation, Tensor? query_start_loc=None, Tensor? output_rows=None, "
      "Tensor? output_query_start_loc=None, int quant_int8_max_rows=1073741824) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(_C, CPU, ops) { ops.impl("fused_decode_layers", &fused_decode_layers); }
// The packed weights are oneDNN (MkldnnCPU) tensors, which select this key.
TORCH_LIBRARY_IMPL(_C, MkldnnCPU, ops) { ops.impl("fused_decode_layers", &fused_decode_layers); }

}  // namespace vllm::cpu_ops
