// Collects this ISA variant's kernels into its table (compiled once per ISA).
#include "kernel_table.h"
#include "vec.h"

namespace vllm::cpu::VLLM_ISA_NS {

void rms_norm(const RmsNormArgs& args);
void fused_add_rms_norm(const FusedAddRmsNormArgs& args);
void act_and_mul(const ActivationArgs& args);
void activation(const ActivationArgs& args);
void rotary_embedding(const RotaryArgs& args);
void paged_attention(const PagedAttentionArgs& args);
void small_m_linear(const LinearArgs& args);
void argmax_rows(const ArgmaxArgs& args);
void mla_attention(const MlaAttentionArgs& args);
// packed_linear.cpp: vdpbf16ps on AVX512-BF16, fp32 FMAs on AVX2
#if (defined(VLLM_ISA_AVX512) && defined(__AVX512BF16__)) || defined(VLLM_ISA_AVX2)
void packed_linear(const LinearArgs& args);
void packed_linear_gated(const LinearArgs& args, Activation kind);
void packed_linear_range(const LinearArgs& args, int64_t p0, int64_t p1, int64_t stream_end,
                         float* scratch, bool widen_x);
void packed_linear_gated_range(const LinearArgs& args, Activation kind, int64_t j0, int64_t j1,
                               int64_t stream_end, float* scratch, bool widen_x);
void packed_moe(const MoeArgs& args, Activation kind);  // packed_moe.cpp
#define VLLM_PACKED_LINEAR &packed_linear
#define VLLM_PACKED_LINEAR_GATED &packed_linear_gated
#define VLLM_PACKED_LINEAR_RANGE &packed_linear_range
#define VLLM_PACKED_LINEAR_GATED_RANGE &packed_linear_gated_range
#define VLLM_PACKED_MOE &packed_moe
#else
#define VLLM_PACKED_LINEAR nullptr
#define VLLM_PACKED_LINEAR_GATED nullptr
#define VLLM_PACKED_LINEAR_RANGE nullptr
#define VLLM_PACKED_LINEAR_GATED_RANGE nullptr
#define VLLM_PACKED_MOE nullptr
#endif

// quant_linear.cpp: vpdpbusd on AVX-512 (needs VNNI), vpmaddubsw on AVX2,
// plain C++ in scalar
#if !defined(VLLM_ISA_AVX512) || defined(__AVX512VNNI__)
void quant_linear(const QuantLinearArgs& args);
#define VLLM_QUANT_LINEAR &quant_linear
#else
#define VLLM_QUANT_LINEAR nullptr
#endif

#define VLLM_STR2(x) #x
#define VLLM_STR(x) VLLM_STR2(x)

const KernelTable& kernel_table() {
  static const KernelTable table{VLLM_STR(VLLM_ISA_NS), &rms_norm, &fused_add_rms_norm,
                                 &act_and_mul, &activation, &rotary_embedding,
                                 &paged_attention, &small_m_linear, &argmax_rows,
                                 VLLM_PACKED_LINEAR, VLLM_PACKED_LINEAR_GATED,
                                 VLLM_PACKED_LINEAR_RANGE, VLLM_PACKED_LINEAR_GATED_RANGE,
                                 VLLM_PACKED_MOE, VLLM_QUANT_LINEAR, &mla_attention};
  return table;
}

}  // namespace vllm::cpu::VLLM_ISA_NS
