// One small float vector type over AVX-512, AVX2 or plain C++.
//
// Kernel sources include this header and are compiled once per ISA variant
// with exactly one of VLLM_ISA_AVX512 / VLLM_ISA_AVX2 / VLLM_ISA_SCALAR
// defined; everything lands in namespace vllm::cpu::VLLM_ISA_NS so the
// variants link into one library side by side. Keep this header (and the
// kernels) free of torch and of std containers: an inline function emitted
// by an AVX-512 translation unit must never be the copy a baseline caller
// links against. For the same reason math goes through __builtin_* (inlined,
// or a call into libm), never through <cmath>'s inline std:: overloads, which
// an unoptimised (Debug) build emits as weak symbols shared across objects.
// (std::memcpy/memset are plain libc functions, safe.)
#pragma once

#include <cstdint>
#include <cstring>

#if defined(VLLM_ISA_AVX512) || defined(VLLM_ISA_AVX2)
#include <immintrin.h>
#endif

#if defined(VLLM_ISA_AVX512)
#define VLLM_ISA_NS avx512
#elif defined(VLLM_ISA_AVX2)
#define VLLM_ISA_NS avx2
#elif defined(VLLM_ISA_SCALAR)
#define VLLM_ISA_NS scalar
#else
#error "define one of VLLM_ISA_AVX512, VLLM_ISA_AVX2, VLLM_ISA_SCALAR"
#endif

namespace vllm::cpu {

// 16-bit float storage types; kernels never do arithmetic on them directly.
struct bf16_t { uint16_t bits; };
struct fp16_t { uint16_t bits; };

namespace VLLM_ISA_NS {
namespace {

// ---- scalar conversions (tails and the scalar variant) ----
inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}
inline float to_float(float x) { return x; }
inline float to_float(bf16_t x) { return bits_to_float(uint32_t(x.bits) << 16); }
inline float to_float(fp16_t x) {
  const uint32_t h = x.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);
    // subnormal half: value = man * 2^-24
    float f = float(man) * 5.9604644775390625e-08f;  // 2^-24
    return sign ? -f : f;
  }
  return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
}
inline void from_float(float x, float* out) { *out = x; }
inline void from_float(float x, bf16_t* out) {
  uint32_t bits = float_to_bits(x);
  if (__builtin_isnan(x)) { out->bits = uint16_t((bits >> 16) | 0x40); return; }
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  out->bits = uint16_t(bits >> 16);
}
inline void from_float(float x, fp16_t* out) {
  const uint32_t bits = float_to_bits(x);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    out->bits = sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
    return;
  }
  if (abs >= 0x477ff000u) { out->bits = sign | 0x7c00u; return; }  // overflow
  if (abs < 0x38800000u) {  // result is subnormal or zero: scale and round
    const float scaled = bits_to_float(abs) * 16777216.0f;  // * 2^24
    out->bits = sign | uint16_t(__builtin_nearbyintf(scaled));
    return;
  }
  uint32_t mant = abs + 0xfffu + ((abs >> 13) & 1u);  // round to nearest even
  out->bits = sign | uint16_t((mant - 0x38000000u) >> 13);
}
// x 2^n for integer-valued n in [-252, 254] without an ldexp instruction:
// two power-of-two factors, each a normal float; the first product is exact,
// the second rounds once, so denormal results come out right.
template <typename V>
inline V ldexp_by_halves(V x, V n) {
  const V half_n = (n * V(0.5f)).round();
  return x * V::pow2(half_n) * V::pow2(n - half_n);
}

// ---- the vector type ----
#if defined(VLLM_ISA_AVX512)
struct FloatVec {
  static constexpr int kWidth = 16;
  __m512 v;
  FloatVec() : v(_mm512_setzero_ps()) {}
  explicit FloatVec(float x) : v(_mm512_set1_ps(x)) {}
  explicit FloatVec(__m512 x) : v(x) {}
  static FloatVec load(const float* p) { return FloatVec(_mm512_loadu_ps(p)); }
  static FloatVec load(const bf16_t* p) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return FloatVec(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
  }
  static FloatVec load(const fp16_t* p) {
    return FloatVec(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
  }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  void store(bf16_t* p) const {
#if defined(__AVX512BF16__)
    __m256i h = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v));
#else
    __m512i bits = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_set1_epi32(0x7fc00000));
    __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
#endif
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
  }
  void store(fp16_t* p) const {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  FloatVec operator+(FloatVec o) const { return FloatVec(_mm512_add_ps(v, o.v)); }
  FloatVec operator*(FloatVec o) const { return FloatVec(_mm512_mul_ps(v, o.v)); }
  FloatVec operator-(FloatVec o) const { return FloatVec(_mm512_sub_ps(v, o.v)); }
  FloatVec operator/(FloatVec o) const { return FloatVec(_mm512_div_ps(v, o.v)); }
  static FloatVec max(FloatVec a, FloatVec b) { return FloatVec(_mm512_max_ps(a.v, b.v)); }
  static FloatVec min(FloatVec a, FloatVec b) { return FloatVec(_mm512_min_ps(a.v, b.v)); }
  FloatVec round() const {
    return FloatVec(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // 1/x to ~1 ulp: 14-bit estimate refined by one Newton step (a division
  // costs several times more).
  FloatVec reciprocal() const {
    const __m512 r = _mm512_rcp14_ps(v);
    return FloatVec(_mm512_mul_ps(r, _mm512_fnmadd_ps(v, r, _mm512_set1_ps(2.0f))));
  }
  // 2^n for integer-valued n in [-126, 127], built from the exponent bits.
  static FloatVec pow2(FloatVec n) {
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
    return FloatVec(_mm512_castsi512_ps(_mm512_slli_epi32(e, 23)));
  }
  // x 2^n for integer-valued n, one rounding (denormal results included):
  // vscalefps does in one instruction what two pow2 products do elsewhere.
  static FloatVec ldexp(FloatVec x, FloatVec n) { return FloatVec(_mm512_scalef_ps(x.v, n.v)); }
  // |mag| with the sign of `sign`.
  static FloatVec copysign(FloatVec mag, FloatVec sign) {
    const __m512i m = _mm512_set1_epi32(0x7fffffff);
    return FloatVec(_mm512_castsi512_ps(
        _mm512_or_si512(_mm512_and_si512(m, _mm512_castps_si512(mag.v)),
                        _mm512_andnot_si512(m, _mm512_castps_si512(sign.v)))));
  }
  static FloatVec fma(FloatVec a, FloatVec b, FloatVec c) {
    return FloatVec(_mm512_fmadd_ps(a.v, b.v, c.v));
  }
  float reduce_add() const { return _mm512_reduce_add_ps(v); }
  float reduce_max() const { return _mm512_reduce_max_ps(v); }
};
#elif defined(VLLM_ISA_AVX2)
struct FloatVec {
  static constexpr int kWidth = 8;
  __m256 v;
  FloatVec() : v(_mm256_setzero_ps()) {}
  explicit FloatVec(float x) : v(_mm256_set1_ps(x)) {}
  explicit FloatVec(__m256 x) : v(x) {}
  static FloatVec load(const float* p) { return FloatVec(_mm256_loadu_ps(p)); }
  static FloatVec load(const bf16_t* p) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return FloatVec(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  }
  static FloatVec load(const fp16_t* p) {
    return FloatVec(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  void store(bf16_t* p) const {
    __m256i bits = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    rounded = _mm256_castps_si256(_mm256_blendv_ps(
        _mm256_castsi256_ps(rounded), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000)), nan));
    __m256i shifted = _mm256_srli_epi32(rounded, 16);
    // packus works per 128-bit lane: pack, then gather the two low quads.
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(shifted, shifted), 0xd8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
  void store(fp16_t* p) const {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  FloatVec operator+(FloatVec o) const { return FloatVec(_mm256_add_ps(v, o.v)); }
  FloatVec operator*(FloatVec o) const { return FloatVec(_mm256_mul_ps(v, o.v)); }
  FloatVec operator-(FloatVec o) const { return FloatVec(_mm256_sub_ps(v, o.v)); }
  FloatVec operator/(FloatVec o) const { return FloatVec(_mm256_div_ps(v, o.v)); }
  static FloatVec max(FloatVec a, FloatVec b) { return FloatVec(_mm256_max_ps(a.v, b.v)); }
  static FloatVec min(FloatVec a, FloatVec b) { return FloatVec(_mm256_min_ps(a.v, b.v)); }
  FloatVec round() const {
    return FloatVec(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // 1/x: 12-bit estimate and one Newton step (~23 bits).
  FloatVec reciprocal() const {
    const __m256 r = _mm256_rcp_ps(v);
    return FloatVec(_mm256_mul_ps(r, _mm256_fnmadd_ps(v, r, _mm256_set1_ps(2.0f))));
  }
  static FloatVec pow2(FloatVec n) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
    return FloatVec(_mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
  }
  static FloatVec ldexp(FloatVec x, FloatVec n) { return ldexp_by_halves(x, n); }
  static FloatVec copysign(FloatVec mag, FloatVec sign) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    return FloatVec(_mm256_or_ps(_mm256_andnot_ps(sign_bit, mag.v), _mm256_and_ps(sign_bit, sign.v)));
  }
  static FloatVec fma(FloatVec a, FloatVec b, FloatVec c) {
    return FloatVec(_mm256_fmadd_ps(a.v, b.v, c.v));
  }
  float reduce_add() const {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
  float reduce_max() const {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_max_ps(lo, hi);
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
};
#else
struct FloatVec {
  static constexpr int kWidth = 8;
  float v[kWidth];
  FloatVec() { for (float& x : v) x = 0.f; }
  explicit FloatVec(float x) { for (float& y : v) y = x; }
  template <typename T>
  static FloatVec load(const T* p) {
    FloatVec r;
    for (int i = 0; i < kWidth; ++i) r.v[i] = to_float(p[i]);
    return r;
  }
  template <typename T>
  void store(T* p) const { for (int i = 0; i < kWidth; ++i) from_float(v[i], p + i); }
  FloatVec operator+(FloatVec o) const { FloatVec r; for (int i = 0; i < kWidth; ++i) r.v[i] = v[i] + o.v[i]; return r; }
  FloatVec operator*(FloatVec o) const { FloatVec r; for (int i = 0; i < kWidth; ++i) r.v[i] = v[i] * o.v[i]; return r; }
  FloatVec operator-(FloatVec o) const { FloatVec r; for (int i = 0; i < kWidth; ++i) r.v[i] = v[i] - o.v[i]; return r; }
  FloatVec operator/(FloatVec o) const { FloatVec r; for (int i = 0; i < kWidth; ++i) r.v[i] = v[i] / o.v[i]; return r; }
  static FloatVec max(FloatVec a, FloatVec b) { FloatVec r; for (int i = 0; i < kWidth; ++i) r.v[i] = a.v[i] > b.v[i] ? a.v[i] : b.v[i]; return r; }
  static FloatVec min(FloatVec a, FloatVec b) { FloatVec r; for (int i = 0; i < kWidth; ++i) r.v[i] = a.v[i] < b.v[i] ? a.v[i] : b.v[i]; return r; }
  FloatVec round() const { FloatVec r; for (int i = 0; i < kWidth; ++i) r.v[i] = __builtin_nearbyintf(v[i]); return r; }
  FloatVec reciprocal() const { return FloatVec(1.0f) / *this; }
  static FloatVec pow2(FloatVec n) {
    FloatVec r;
    for (int i = 0; i < kWidth; ++i) r.v[i] = bits_to_float(uint32_t(int32_t(n.v[i]) + 127) << 23);
    return r;
  }
  static FloatVec ldexp(FloatVec x, FloatVec n) { return ldexp_by_halves(x, n); }
  static FloatVec copysign(FloatVec mag, FloatVec sign) {
    FloatVec r;
    for (int i = 0; i < kWidth; ++i) r.v[i] = __builtin_copysignf(mag.v[i], sign.v[i]);
    return r;
  }
  static FloatVec fma(FloatVec a, FloatVec b, FloatVec c) {
    FloatVec r;
    for (int i = 0; i < kWidth; ++i) r.v[i] = __builtin_fmaf(a.v[i], b.v[i], c.v[i]);
    return r;
  }
  float reduce_add() const { float s = 0.f; for (float x : v) s += x; return s; }
  float reduce_max() const { float m = v[0]; for (float x : v) m = x > m ? x : m; return m; }
};
#endif

// Round every lane to T's precision and back (identity for float); kernels
// use it where the reference rounds an intermediate to the input dtype.
template <typename T>
inline FloatVec round_to(FloatVec x) {
  alignas(64) T tmp[FloatVec::kWidth];
  x.store(tmp);
  return FloatVec::load(tmp);
}
template <>
inline FloatVec round_to<float>(FloatVec x) { return x; }

// e^x to about 2 ulp: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6
// polynomial (Cephes' expf coefficients), scaled by 2^n with one rounding
// (FloatVec::ldexp) so results down to the denormals (and 0 below) come out
// right. Saturates at e^88.7 above.
inline FloatVec exp(FloatVec x) {
  x = FloatVec::min(FloatVec::max(x, FloatVec(-104.0f)), FloatVec(88.7f));
  const FloatVec n = (x * FloatVec(1.44269504088896341f)).round();
  FloatVec r = FloatVec::fma(n, FloatVec(-0.693359375f), x);
  r = FloatVec::fma(n, FloatVec(2.12194440e-4f), r);
  FloatVec p(1.9875691500e-4f);
  p = FloatVec::fma(p, r, FloatVec(1.3981999507e-3f));
  p = FloatVec::fma(p, r, FloatVec(8.3334519073e-3f));
  p = FloatVec::fma(p, r, FloatVec(4.1665795894e-2f));
  p = FloatVec::fma(p, r, FloatVec(1.6666665459e-1f));
  p = FloatVec::fma(p, r, FloatVec(5.0000001201e-1f));
  p = FloatVec::fma(p * r, r, r + FloatVec(1.0f));
  return FloatVec::ldexp(p, n);
}

// 1 / (1 + e^-x), without cancellation for either sign of x.
inline FloatVec sigmoid(FloatVec x) {
  return (FloatVec(1.0f) + exp(FloatVec(0.0f) - x)).reciprocal();
}

// 1 + erf(z) from erfc(|z|) (relative error below 1.2e-7, Numerical Recipes'
// Chebyshev fit), with no cancellation for negative z, where GELU is small.
inline FloatVec one_plus_erf(FloatVec z) {
  const FloatVec a = FloatVec::copysign(z, FloatVec(1.0f));  // |z|
  const FloatVec t = FloatVec::fma(FloatVec(0.5f), a, FloatVec(1.0f)).reciprocal();
  FloatVec p(0.17087277f);
  p = FloatVec::fma(p, t, FloatVec(-0.82215223f));
  p = FloatVec::fma(p, t, FloatVec(1.48851587f));
  p = FloatVec::fma(p, t, FloatVec(-1.13520398f));
  p = FloatVec::fma(p, t, FloatVec(0.27886807f));
  p = FloatVec::fma(p, t, FloatVec(-0.18628806f));
  p = FloatVec::fma(p, t, FloatVec(0.09678418f));
  p = FloatVec::fma(p, t, FloatVec(0.37409196f));
  p = FloatVec::fma(p, t, FloatVec(1.00002368f));
  p = FloatVec::fma(p, t, FloatVec(-1.26551223f));
  const FloatVec erfc_a = t * exp(p - a * a);
  // s = sign(z): (1 + s) - s erfc(|z|) is 2 - erfc(z) or erfc(|z|), exactly.
  const FloatVec s = FloatVec::copysign(FloatVec(1.0f), z);
  return FloatVec::fma(FloatVec(0.0f) - s, erfc_a, FloatVec(1.0f) + s);
}

// Loads/stores of the last n < kWidth elements of a row, zero-padded.
template <typename T>
inline FloatVec load_tail(const T* p, int n) {
  alignas(64) T tmp[FloatVec::kWidth];
  std::memset(tmp, 0, sizeof(tmp));
  std::memcpy(tmp, p, sizeof(T) * n);
  return FloatVec::load(tmp);
}
template <typename T>
inline void store_tail(FloatVec x, T* p, int n) {
  alignas(64) T tmp[FloatVec::kWidth];
  x.store(tmp);
  std::memcpy(p, tmp, sizeof(T) * n);
}

}  // namespace
}  // namespace VLLM_ISA_NS
}  // namespace vllm::cpu
