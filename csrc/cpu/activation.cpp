// SiLU/GELU family, gated (*_and_mul) and plain, written once against FloatVec.
//
// Math is fp32. The gated ops round the activation to the input dtype before
// the multiply, as vLLM's reference `act(x[..., :d]) * x[..., d:]` does.
#include <omp.h>

#include "activation_math.h"
#include "dispatch.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

constexpr int W = FloatVec::kWidth;

template <typename T, Activation kKind, bool kGated>
void run_rows(const ActivationArgs& a) {
  const T* in = static_cast<const T*>(a.input);
  T* out = static_cast<T*>(a.out);
  const int64_t n = a.width;
#pragma omp parallel for schedule(static) if (a.num_rows * n >= kParallelMinElements)
  for (int64_t r = 0; r < a.num_rows; ++r) {
    const T* x = in + r * a.input_row_stride;
    T* y = out + r * a.out_row_stride;
    int64_t i = 0;
    for (; i + W <= n; i += W) {
      FloatVec v = apply_activation<kKind>(FloatVec::load(x + i));
      if constexpr (kGated) v = round_to<T>(v) * FloatVec::load(x + n + i);
      v.store(y + i);
    }
    if (i < n) {
      const int tail = int(n - i);
      FloatVec v = apply_activation<kKind>(load_tail(x + i, tail));
      if constexpr (kGated) v = round_to<T>(v) * load_tail(x + n + i, tail);
      store_tail(v, y + i, tail);
    }
  }
}

template <typename T, bool kGated>
void by_kind(const ActivationArgs& a) {
  switch (a.kind) {
    case Activation::kSilu: run_rows<T, Activation::kSilu, kGated>(a); break;
    case Activation::kGelu: run_rows<T, Activation::kGelu, kGated>(a); break;
    case Activation::kGeluTanh:
    case Activation::kGeluNew:
    case Activation::kGeluFast: run_rows<T, Activation::kGeluTanh, kGated>(a); break;
    case Activation::kGeluQuick: run_rows<T, Activation::kGeluQuick, kGated>(a); break;
  }
}

template <typename T>
struct GatedFn { static void run(const ActivationArgs& a) { by_kind<T, true>(a); } };
template <typename T>
struct PlainFn { static void run(const ActivationArgs& a) { by_kind<T, false>(a); } };

}  // namespace

void act_and_mul(const ActivationArgs& args) { by_dtype<GatedFn>(args); }
void activation(const ActivationArgs& args) { by_dtype<PlainFn>(args); }

}  // namespace vllm::cpu::VLLM_ISA_NS
