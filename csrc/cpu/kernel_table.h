// The CPU kernels of one ISA variant, as a table of plain function pointers.
//
// Torch-free on purpose: the per-ISA kernel objects are compiled with
// -mavx512*/-mavx2 and must not share inline code with the bindings, which
// are compiled for the baseline ISA and pick a table at run time.
#pragma once

#include <cstdint>

#include "../core/attention_args.h"
#include "../core/mla_args.h"
#include "../core/dtype.h"

namespace vllm::cpu {

using vllm::DType;

// Rows of `hidden` elements; strides are in elements between rows.
struct RmsNormArgs {
  void* out;
  const void* input;
  const void* weight;
  int64_t num_rows;
  int64_t hidden;
  int64_t input_row_stride;
  int64_t out_row_stride;
  float epsilon;
  DType dtype;
};

// In place: residual += input; input = rms_norm(residual) * weight.
struct FusedAddRmsNormArgs {
  void* input;
  void* residual;
  const void* weight;
  int64_t num_rows;
  int64_t hidden;
  int64_t input_row_stride;
  int64_t residual_row_stride;
  float epsilon;
  DType dtype;
};

// Element-wise activations. For the *_and_mul ops a row holds 2 * `width`
// inputs (gate, then up) and `width` outputs; for the plain ones, `width` each.
enum class Activation : int { kSilu, kGelu, kGeluTanh, kGeluNew, kGeluFast, kGeluQuick };

struct ActivationArgs {
  void* out;
  const void* input;
  int64_t num_rows;
  int64_t width;
  int64_t input_row_stride;
  int64_t out_row_stride;
  Activation kind;
  DType dtype;
};

// In place on query/key rows of `head_size`; the first `rot_dim` of each head
// rotate. NeoX pairs (i, i + rot_dim/2), GPT-J pairs (2i, 2i+1). cos_sin row
// for position p: rot_dim/2 cosines then rot_dim/2 sines.
struct RotaryArgs {
  const int64_t* positions;
  void* query;
  void* key;  // may be null
  const void* cos_sin_cache;
  int64_t num_tokens;
  int64_t num_heads;
  int64_t num_kv_heads;
  int64_t head_size;
  int64_t rot_dim;
  int64_t query_token_stride;
  int64_t key_token_stride;
  bool is_neox;
  DType dtype;
};

using vllm::PagedAttentionArgs;  // csrc/core/attention_args.h

// out[m, n] = sum_k input[m, k] * weight[n, k] (+ bias[n]), all tensors of
// `dtype`. `weight`: contiguous [n, k] rows for small_m_linear, the packed
// layout kPackedLinearPanel describes for packed_linear.
struct LinearArgs {
  void* out;
  const void* input;
  const void* weight;
  const void* bias;  // may be null
  int64_t m, n, k;
  int64_t input_row_stride;
  int64_t out_row_stride;
  DType dtype;
};

// out[t] = sum_j topk_weights[t][j] * expert_e(input[t]), e = topk_ids[t][j],
// expert_e(x) = W2_e (act(W_gate,e x) * (W_up,e x)); bf16 input and out [m,
// hidden], fp32 accumulation. w13: per expert, its [W_gate; W_up] packed as
// packed_linear_gated reads it ([ceil(inter / 48)][2][hidden / 2][48][2]),
// experts back to back; w2: per expert its W2 [hidden, inter] packed as
// packed_linear reads it ([ceil(hidden / 48)][inter / 2][48][2]). topk_ids
// lie in [0, num_experts) (the bindings check).
struct MoeArgs {
  void* out;
  const void* input;
  const void* w13;
  const void* w2;
  const float* topk_weights;
  const int32_t* topk_ids;
  int64_t m, topk, hidden, inter, num_experts;
  int64_t input_row_stride;
  int64_t out_row_stride;
};

// Output columns per panel of a weight packed for packed_linear: the weight
// [n, k] (k even) becomes [ceil(n / 48)][k / 2][48][2], each panel's (k, k+1)
// pairs of 48 columns side by side, zero columns past n.
constexpr int64_t kPackedLinearPanel = 48;

// Weight-only quantized GEMM: out[m, n] = x~[m, k] W[n, k]^T (+ bias[n]),
// with W stored as 4-bit unsigned (u in [0, 15]) or 8-bit signed (q in
// [-128, 127]) integers, one fp16 scale s and fp16 offset b per `group_size`
// k-values of a column: w = s * u + b. x~ is x quantized per row in blocks
// of 32: scale dx = max|x| / 127, xq = rint(x * 127 / max|x|) (so the
// integer dot products are exact). Per column, for every flush block of
// min(group_size, 32) k-values: acc = fma(float(sum xq * u), s * dx, acc);
// after each group: acc = fma(b, gsum, acc), gsum = sum over the group's
// blocks of dx * sum xq. Every ISA variant computes exactly this (the same
// bits).
//
// Packed layout (`weight`, bytes): [ceil(n / 48)] panels of 48 columns, each
// [k / group_size] groups of kQuantHeaderBytes (48 fp16 scales, then 48 fp16
// offsets, column order) followed by the group's values in lines of 64
// bytes, 3 lines (columns 0-15, 16-31, 32-47) per step of 8 k (4-bit) or 4
// k (8-bit). In a line, column c owns bytes 4c..4c+3: 8-bit, q of k0+j in
// byte j; 4-bit, u of k0+j in byte j's low nibble and of k0+4+j in its high
// nibble. Columns past n are zero.
constexpr int64_t kQuantPanel = 48;
constexpr int64_t kQuantHeaderBytes = 4 * kQuantPanel;
constexpr int64_t kQuantActBlock = 32;

struct QuantLinearArgs {
  void* out;
  const void* input;
  const uint8_t* weight;
  const void* bias;  // may be null; of `dtype`
  int64_t m, n, k;
  int64_t group_size;  // 16, or a multiple of 32; divides k (k % 32 == 0)
  int bits;            // 4 or 8
  // bf16 x with more rows than this (and a bf16 GEMM in the variant): the
  // weight expanded to bf16 per panel and packed_linear's arithmetic
  // instead (x not rounded to int8)
  int64_t int8_max_rows;
  int64_t input_row_stride;
  int64_t out_row_stride;
  DType dtype;
};

// out[r] = index of the largest of row r's `vocab` logits (torch.argmax's
// answer: first maximum, first NaN if any).
struct ArgmaxArgs {
  int64_t* out;
  const void* logits;
  int64_t num_rows;
  int64_t vocab;
  int64_t row_stride;
  DType dtype;
};

using vllm::MlaAttentionArgs;  // csrc/core/mla_args.h
using vllm::kMlaDimMultiple;
using vllm::kMlaMaxLatentDim;

// Limits of the CPU attention kernel (checked by the bindings).
constexpr int64_t kAttentionMaxHeadSize = 256;
constexpr int64_t kAttentionMaxGroup = 64;
constexpr int64_t kAttentionMaxBlockSize = 128;

struct KernelTable {
  const char* isa;
  void (*rms_norm)(const RmsNormArgs&);
  void (*fused_add_rms_norm)(const FusedAddRmsNormArgs&);
  void (*act_and_mul)(const ActivationArgs&);
  void (*activation)(const ActivationArgs&);
  void (*rotary_embedding)(const RotaryArgs&);
  void (*paged_attention)(const PagedAttentionArgs&);
  void (*small_m_linear)(const LinearArgs&);
  void (*argmax_rows)(const ArgmaxArgs&);
  // bf16 x W^T (+ b) on a weight packed as kPackedLinearPanel describes
  // (LinearArgs.weight); AVX512-BF16 and AVX2 variants (null in scalar, and
  // in AVX-512 builds whose compiler lacks BF16).
  void (*packed_linear)(const LinearArgs&);
  // out = act(x W_gate^T + b_gate) * (x W_up^T + b_up): LinearArgs.n is 2d,
  // .weight W_gate's and W_up's panels packed as above (each half padded to
  // whole panels) and interleaved (gate panel j, up panel j, ...), .bias
  // [b_gate; b_up] or null; out has d columns. Null where packed_linear is.
  void (*packed_linear_gated)(const LinearArgs&, Activation);
  // One thread's part of packed_linear (output panels [p0, p1)) and of
  // packed_linear_gated (gate/up panel pairs [j0, j1)), called by each
  // thread of a region the caller runs (fused_decode_layers' one-row loop).
  // `stream_end`: the thread goes on with the units up to there next, so
  // the last one prefetches into the following (p1 when it does not).
  // `scratch`: m x k floats of the thread's own, for the variants that
  // widen x (AVX2; unused by AVX512-BF16), which widen x into it when
  // `widen_x` and otherwise read what an earlier call with the same x left
  // there. Null where packed_linear is.
  void (*packed_linear_range)(const LinearArgs&, int64_t p0, int64_t p1, int64_t stream_end,
                              float* scratch, bool widen_x);
  void (*packed_linear_gated_range)(const LinearArgs&, Activation, int64_t j0, int64_t j1,
                                    int64_t stream_end, float* scratch, bool widen_x);
  // A MoE layer's routed experts (MoeArgs). Null where packed_linear is.
  void (*packed_moe)(const MoeArgs&, Activation);
  // QuantLinearArgs (quant_linear.cpp): AVX512-VNNI, AVX2 and scalar
  // variants (null in AVX-512 builds whose compiler lacks VNNI).
  void (*quant_linear)(const QuantLinearArgs&);
  // MlaAttentionArgs (mla_attention.cpp): every variant.
  void (*mla_attention)(const MlaAttentionArgs&);
};

// One per compiled variant; defined in kernel_table.cpp built per ISA.
namespace avx512 { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
namespace scalar { const KernelTable& kernel_table(); }

// Chosen at load time from the running CPU; changeable by set_active_isa.
const KernelTable& active_kernels();
// Returns false (and changes nothing) when `isa` is not built or not
// supported by this CPU; "auto" selects the best supported variant.
bool set_active_isa(const char* isa);
// Comma-separated variants this CPU can run, best first.
const char* supported_isas();
// Comma-separated variants compiled into this library.
const char* built_isas();

}  // namespace vllm::cpu
