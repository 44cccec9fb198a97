// CPU implementations of the _C ops: shared argument checks, then the kernel
// table of the ISA variant chosen at load time.
#include <torch/library.h>

#include "../core/rotary_checks.h"
#include "../core/tensor_checks.h"
#include "cpu_ops.h"  // the declarations the fused layer loop calls: checked here
#include "kernel_table.h"

namespace vllm::cpu_ops {

void rms_norm(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight,
              double epsilon) {
  constexpr const char* op = "rms_norm";
  check_norm_weight(weight, input, op);
  check_same(out, input, op, "out");
  cpu::RmsNormArgs args{out.data_ptr(), input.data_ptr(), weight.data_ptr(),
                        num_rows(input), input.size(-1), row_stride(input, op, "input"),
                        row_stride(out, op, "out"), static_cast<float>(epsilon),
                        kernel_dtype(input, op)};
  if (args.num_rows > 0) cpu::active_kernels().rms_norm(args);
}

void fused_add_rms_norm(at::Tensor& input, at::Tensor& residual, const at::Tensor& weight,
                        double epsilon) {
  constexpr const char* op = "fused_add_rms_norm";
  check_norm_weight(weight, input, op);
  check_same(residual, input, op, "residual");
  cpu::FusedAddRmsNormArgs args{
      input.data_ptr(), residual.data_ptr(), weight.data_ptr(), num_rows(input),
      input.size(-1), row_stride(input, op, "input"), row_stride(residual, op, "residual"),
      static_cast<float>(epsilon), kernel_dtype(input, op)};
  if (args.num_rows > 0) cpu::active_kernels().fused_add_rms_norm(args);
}

namespace {

void run_activation(at::Tensor& out, const at::Tensor& input, cpu::Activation kind, bool gated,
                    const char* op) {
  const int64_t width = check_activation(out, input, gated, op);
  cpu::ActivationArgs args{out.data_ptr(), input.data_ptr(), num_rows(input), width,
                           row_stride(input, op, "input"), row_stride(out, op, "out"), kind,
                           kernel_dtype(input, op)};
  if (args.num_rows == 0 || width == 0) return;
  const auto& kernels = cpu::active_kernels();
  (gated ? kernels.act_and_mul : kernels.activation)(args);
}

}  // namespace

#define VLLM_CPU_ACTIVATION(name, kind, gated)                      \
  void name(at::Tensor& out, const at::Tensor& input) {            \
    run_activation(out, input, cpu::Activation::kind, gated, #name); \
  }
VLLM_CPU_ACTIVATION(silu_and_mul, kSilu, true)
VLLM_CPU_ACTIVATION(gelu_and_mul, kGelu, true)
VLLM_CPU_ACTIVATION(gelu_tanh_and_mul, kGeluTanh, true)
VLLM_CPU_ACTIVATION(gelu_new, kGeluNew, false)
VLLM_CPU_ACTIVATION(gelu_fast, kGeluFast, false)
VLLM_CPU_ACTIVATION(gelu_quick, kGeluQuick, false)
#undef VLLM_CPU_ACTIVATION

void rotary_embedding(const at::Tensor& positions, at::Tensor& query,
                      const std::optional<at::Tensor>& key, int64_t head_size,
                      const at::Tensor& cos_sin_cache, bool is_neox) {
  const RotaryShape s = check_rotary(positions, query, key, head_size, cos_sin_cache);
  if (s.num_tokens == 0) return;
  // Out-of-range positions would read past the cache: refuse them. A plain
  // loop over num_tokens int64s: at::aminmax plus two item() calls cost ~5 us,
  // paid by every layer of every decode step.
  const int64_t* pos = positions.data_ptr<int64_t>();
  int64_t lo = pos[0], hi = pos[0];
  for (int64_t t = 1; t < s.num_tokens; ++t) {
    lo = pos[t] < lo ? pos[t] : lo;
    hi = pos[t] > hi ? pos[t] : hi;
  }
  TORCH_CHECK(lo >= 0 && hi < cos_sin_cache.size(0), "rotary_embedding: positions must lie in [0, ",
              cos_sin_cache.size(0), "), got [", lo, ", ", hi, "]");
  cpu::RotaryArgs args{positions.data_ptr<int64_t>(), query.data_ptr(),
                       key.has_value() ? key->data_ptr() : nullptr, cos_sin_cache.data_ptr(),
                       s.num_tokens, s.num_heads, s.num_kv_heads, head_size, s.rot_dim,
                       s.query_stride, s.key_stride, is_neox, kernel_dtype(query, "rotary_embedding")};
  cpu::active_kernels().rotary_embedding(args);
}

}  // namespace vllm::cpu_ops

TORCH_LIBRARY_IMPL(_C, CPU, ops) {
  ops.impl("rms_norm", &vllm::cpu_ops::rms_norm);
  ops.impl("fused_add_rms_norm", &vllm::cpu_ops::fused_add_rms_norm);
  ops.impl("silu_and_mul", &vllm::cpu_ops::silu_and_mul);
  ops.impl("gelu_and_mul", &vllm::cpu_ops::gelu_and_mul);
  ops.impl("gelu_tanh_and_mul", &vllm::cpu_ops::gelu_tanh_and_mul);
  ops.impl("gelu_new", &vllm::cpu_ops::gelu_new);
  ops.impl("gelu_fast", &vllm::cpu_ops::gelu_fast);
  ops.impl("gelu_quick", &vllm::cpu_ops::gelu_quick);
  ops.impl("rotary_embedding", &vllm::cpu_ops::rotary_embedding);
}
