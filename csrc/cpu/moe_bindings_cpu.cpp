// packed_moe_experts: a MoE layer's routed experts in one call on CPUs with
// the packed-panel GEMMs (AVX512-BF16, AVX2), behind FusedMoE for bf16
// (csrc/cpu/packed_moe.cpp). CPU builds only.
#include <torch/library.h>

#include "../core/tensor_checks.h"
#include "packed_op_checks.h"
#include "kernel_table.h"

namespace vllm::cpu_ops {

// out [m, hidden] = sum over each token's k choices of topk_weights *
// expert(input), bf16 in and out, fp32 sums. w13_packed [E, ceil(inter /
// 48), 2, hidden / 2, 48, 2]: each expert's [W_gate; W_up] as
// pack_gate_up_pairs packs it; w2_packed [E, ceil(hidden / 48), inter / 2,
// 48, 2]: each expert's W2 [hidden, inter] as pack_weight_pairs packs it;
// topk_weights [m, k] fp32, topk_ids [m, k] int32 in [0, E).
void packed_moe_experts(at::Tensor& out, const at::Tensor& input, const at::Tensor& w13_packed,
                        const at::Tensor& w2_packed, const at::Tensor& topk_weights,
                        const at::Tensor& topk_ids, const std::string& activation) {
  constexpr const char* op = "packed_moe_experts";
  constexpr int64_t panel = cpu::kPackedLinearPanel;
  check_packed_kernel(cpu::active_kernels().packed_moe != nullptr, op);
  const cpu::Activation kind = gated_activation(activation, op);
  TORCH_CHECK(input.dim() == 2 && out.dim() == 2 && out.sizes() == input.sizes(), op,
              ": input and out must both be [m, hidden], got ", input.sizes(), " and ",
              out.sizes());
  TORCH_CHECK(input.scalar_type() == at::kBFloat16, op, ": bf16 only, got ",
              input.scalar_type());
  check_same_dtype_device(out, input, op, "out");
  TORCH_CHECK(input.stride(1) == 1 && out.stride(1) == 1, op,
              ": input and out rows must be contiguous");
  const int64_t m = input.size(0), h = input.size(1);
  TORCH_CHECK(h % 2 == 0, op, ": hidden size must be even, got ", h);
  TORCH_CHECK(w2_packed.dim() == 5 && w2_packed.size(1) == (h + panel - 1) / panel &&
                  w2_packed.size(3) == panel && w2_packed.size(4) == 2,
              op, ": w2_packed must be [E, ", (h + panel - 1) / panel, ", inter / 2, ", panel,
              ", 2] for hidden ", h, ", got ", w2_packed.sizes());
  const int64_t e = w2_packed.size(0), n = 2 * w2_packed.size(2);
  const int64_t pairs = (n + panel - 1) / panel;
  TORCH_CHECK(w13_packed.dim() == 6 && w13_packed.size(0) == e && w13_packed.size(1) == pairs &&
                  w13_packed.size(2) == 2 && w13_packed.size(3) == h / 2 &&
                  w13_packed.size(4) == panel && w13_packed.size(5) == 2,
              op, ": w13_packed must be [", e, ", ", pairs, ", 2, ", h / 2, ", ", panel,
              ", 2] for ", e, " experts of intermediate size ", n, " (from w2_packed) and hidden ",
              h, ", got ", w13_packed.sizes());
  TORCH_CHECK(w13_packed.is_contiguous() && w2_packed.is_contiguous(), op,
              ": packed weights must be contiguous");
  check_same_dtype_device(w13_packed, input, op, "w13_packed");
  check_same_dtype_device(w2_packed, input, op, "w2_packed");
  TORCH_CHECK(topk_ids.dim() == 2 && topk_ids.size(0) == m &&
                  topk_weights.sizes() == topk_ids.sizes(),
              op, ": topk_weights ", topk_weights.sizes(), " and topk_ids ", topk_ids.sizes(),
              " must both be [", m, ", k]");
  TORCH_CHECK(topk_ids.scalar_type() == at::kInt && topk_weights.scalar_type() == at::kFloat &&
                  topk_ids.is_contiguous() && topk_weights.is_contiguous(),
              op, ": topk_ids must be contiguous int32 and topk_weights contiguous float32");
  const int32_t* ids = topk_ids.data_ptr<int32_t>();
  for (int64_t i = 0; i < topk_ids.numel(); ++i) {
    TORCH_CHECK(ids[i] >= 0 && ids[i] < e, op, ": topk_ids holds expert ", ids[i],
                " outside [0, ", e, ")");
  }
  const cpu::MoeArgs args{out.data_ptr(), input.data_ptr(), w13_packed.data_ptr(),
                          w2_packed.data_ptr(), topk_weights.data_ptr<float>(), ids, m,
                          topk_ids.size(1), h, n, e, input.stride(0), out.stride(0)};
  if (m > 0) cpu::active_kernels().packed_moe(args, kind);
}

TORCH_LIBRARY_FRAGMENT(_C, ops) {
  // bf16 out = a MoE layer's routed experts over packed weights (CPU).
  ops.def(
      "packed_moe_experts(Tensor! out, Tensor input, Tensor w13_packed, Tensor w2_packed, "
      "Tensor topk_weights, Tensor topk_ids, str activation) -> ()");
}

TORCH_LIBRARY_IMPL(_C, CPU, ops) { ops.impl("packed_moe_experts", &packed_moe_experts); }

}  // namespace vllm::cpu_ops
