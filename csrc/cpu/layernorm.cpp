// RMSNorm and fused residual-add + RMSNorm, written once against FloatVec.
//
// Numerics follow vLLM's reference: the mean of squares and the scaling are
// done in fp32; the normalised value is rounded to the input dtype before it
// is multiplied by the weight, and the product is rounded again on store.
#include <omp.h>

#include "dispatch.h"

namespace vllm::cpu::VLLM_ISA_NS {
namespace {

constexpr int W = FloatVec::kWidth;

template <typename T>
float sum_of_squares(const T* x, int64_t n) {
  FloatVec acc0, acc1;
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    FloatVec a = FloatVec::load(x + i), b = FloatVec::load(x + i + W);
    acc0 = FloatVec::fma(a, a, acc0);
    acc1 = FloatVec::fma(b, b, acc1);
  }
  for (; i + W <= n; i += W) {
    FloatVec a = FloatVec::load(x + i);
    acc0 = FloatVec::fma(a, a, acc0);
  }
  if (i < n) {
    FloatVec a = load_tail(x + i, int(n - i));
    acc1 = FloatVec::fma(a, a, acc1);
  }
  return (acc0 + acc1).reduce_add();
}

// out[i] = T(T(x[i] * scale) * w[i])
template <typename T>
void scale_row(T* out, const T* x, const T* w, float scale, int64_t n) {
  const FloatVec s(scale);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    FloatVec y = round_to<T>(FloatVec::load(x + i) * s) * FloatVec::load(w + i);
    y.store(out + i);
  }
  if (i < n) {
    const int tail = int(n - i);
    FloatVec y = round_to<T>(load_tail(x + i, tail) * s) * load_tail(w + i, tail);
    store_tail(y, out + i, tail);
  }
}

// residual[i] = T(x[i] + residual[i]), computed in fp32 like the reference.
template <typename T>
void add_into(T* residual, const T* x, int64_t n) {
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    (FloatVec::load(x + i) + FloatVec::load(residual + i)).store(residual + i);
  }
  if (i < n) {
    const int tail = int(n - i);
    store_tail(load_tail(x + i, tail) + load_tail(residual + i, tail), residual + i, tail);
  }
}

template <typename T>
void rms_norm_typed(const RmsNormArgs& a) {
  const T* in = static_cast<const T*>(a.input);
  const T* w = static_cast<const T*>(a.weight);
  T* out = static_cast<T*>(a.out);
#pragma omp parallel for schedule(static) if (a.num_rows * a.hidden >= kParallelMinElements)
  for (int64_t r = 0; r < a.num_rows; ++r) {
    const T* x = in + r * a.input_row_stride;
    const float mean_sq = sum_of_squares(x, a.hidden) / float(a.hidden);
    const float scale = 1.0f / __builtin_sqrtf(mean_sq + a.epsilon);
    scale_row(out + r * a.out_row_stride, x, w, scale, a.hidden);
  }
}

template <typename T>
void fused_add_rms_norm_typed(const FusedAddRmsNormArgs& a) {
  T* in = static_cast<T*>(a.input);
  T* res = static_cast<T*>(a.residual);
  const T* w = static_cast<const T*>(a.weight);
#pragma omp parallel for schedule(static) if (a.num_rows * a.hidden >= kParallelMinElements)
  for (int64_t r = 0; r < a.num_rows; ++r) {
    T* x = in + r * a.input_row_stride;
    T* z = res + r * a.residual_row_stride;
    add_into(z, x, a.hidden);
    const float mean_sq = sum_of_squares(z, a.hidden) / float(a.hidden);
    const float scale = 1.0f / __builtin_sqrtf(mean_sq + a.epsilon);
    scale_row(x, z, w, scale, a.hidden);
  }
}

template <typename T>
struct RmsNormFn { static void run(const RmsNormArgs& a) { rms_norm_typed<T>(a); } };
template <typename T>
struct FusedAddRmsNormFn {
  static void run(const FusedAddRmsNormArgs& a) { fused_add_rms_norm_typed<T>(a); }
};

}  // namespace

void rms_norm(const RmsNormArgs& args) { by_dtype<RmsNormFn>(args); }
void fused_add_rms_norm(const FusedAddRmsNormArgs& args) {
  by_dtype<FusedAddRmsNormFn>(args);
}

}  // namespace vllm::cpu::VLLM_ISA_NS
