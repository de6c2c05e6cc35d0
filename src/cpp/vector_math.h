// exp() and log() written so that GCC vectorizes loops that call them:
// branch-free, no library call. Included only by ISA translation units, so they
// are compiled at each instruction set's vector width. Accuracy: a few ulp.
#pragma once
#include <cstdint>

#include "common.h"

namespace fastnn {
namespace FASTNN_ISA_NS {

// exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln2 / 2, exp(r) by its
// Taylor polynomial (degree 7 for float, 12 for double: truncation < 1 ulp).
// 2^n is applied as two normal powers of two, 2^(n - n/2) and then 2^(n/2), so
// that results below the smallest normal number underflow gradually (rounded
// once, by the last product) and results past the largest overflow to inf;
// x is clamped where the result is 0 or inf anyway. A NaN passes the clamps
// and the arithmetic as NaN. No selects: the loops calling this vectorise.
static inline float vexp(float x) {
  const float xc = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = xc * 1.44269504088896341f + magic;
  const float n = t - magic;
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // n and half = round(n / 2) as two's complement bits, in unsigned arithmetic
  // (a NaN's bits make a meaningless power of two, which the NaN p absorbs).
  // |half|, |n - half| <= 76: both powers of two are normal numbers.
  const std::uint32_t n_bits = __builtin_bit_cast(std::uint32_t, t) - 0x4B400000u;
  const std::uint32_t half_bits = __builtin_bit_cast(std::uint32_t, n * 0.5f + magic) - 0x4B400000u;
  const float first = __builtin_bit_cast(float, (n_bits - half_bits + 127u) << 23);
  const float second = __builtin_bit_cast(float, (half_bits + 127u) << 23);
  return p * first * second;
}

static inline double vexp(double x) {
  const double xc = x < -746.0 ? -746.0 : (x > 710.0 ? 710.0 : x);
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const double t = xc * 1.4426950408889634 + magic;
  const double n = t - magic;
  const double r = (xc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double p = 1.0 / 479001600;
  p = p * r + 1.0 / 39916800;
  p = p * r + 1.0 / 3628800;
  p = p * r + 1.0 / 362880;
  p = p * r + 1.0 / 40320;
  p = p * r + 1.0 / 5040;
  p = p * r + 1.0 / 720;
  p = p * r + 1.0 / 120;
  p = p * r + 1.0 / 24;
  p = p * r + 1.0 / 6;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const std::uint64_t n_bits = __builtin_bit_cast(std::uint64_t, t) - 0x4338000000000000ull;
  const std::uint64_t half_bits = __builtin_bit_cast(std::uint64_t, n * 0.5 + magic) - 0x4338000000000000ull;
  const double first = __builtin_bit_cast(double, (n_bits - half_bits + 1023u) << 52);  // |n - half|, |half| <= 539
  const double second = __builtin_bit_cast(double, (half_bits + 1023u) << 52);
  return p * first * second;
}

// log(x) for positive normal x (NaN stays NaN): x = 2^k * z with z in
// [0.6875, 1.375), and log z = 2 atanh(u) = 2 (u + u^3/3 + u^5/5 + ...) with
// u = (z - 1) / (z + 1), |u| < 0.19 (series to u^11 for float, u^23 for double).
static inline float vlog(float x) {
  const std::uint32_t bits = __builtin_bit_cast(std::uint32_t, x);
  const std::uint32_t offset = 0x3F300000u;  // the bits of 0.6875
  const std::uint32_t shifted = bits - offset;
  const float k = float(std::int32_t(shifted) >> 23);
  const float z = __builtin_bit_cast(float, bits - (shifted & 0xFF800000u));
  const float u = (z - 1.0f) / (z + 1.0f);
  const float u2 = u * u;
  float p = 1.0f / 11;
  p = p * u2 + 1.0f / 9;
  p = p * u2 + 1.0f / 7;
  p = p * u2 + 1.0f / 5;
  p = p * u2 + 1.0f / 3;
  p = p * u2 + 1.0f;
  const float log_z = 2.0f * u * p;
  const float y = (k * 0.693359375f + log_z) + k * -2.12194440e-4f;
  return x != x ? x : y;
}

static inline double vlog(double x) {
  const std::uint64_t bits = __builtin_bit_cast(std::uint64_t, x);
  const std::uint64_t offset = 0x3FE6000000000000ull;  // the bits of 0.6875
  const std::uint64_t shifted = bits - offset;
  const double k = double(std::int64_t(shifted) >> 52);
  const double z = __builtin_bit_cast(double, bits - (shifted & 0xFFF0000000000000ull));
  const double u = (z - 1.0) / (z + 1.0);
  const double u2 = u * u;
  double p = 1.0 / 23;
  for (int d = 21; d >= 1; d -= 2) p = p * u2 + 1.0 / d;
  const double log_z = 2.0 * u * p;
  const double y = (k * 6.93147180369123816490e-01 + log_z) + k * 1.90821492927058770002e-10;
  return x != x ? x : y;
}

// expm1(x) = exp(x) - 1, accurate near 0 (Kahan: (u - 1) * x / log(u) with
// u = exp(x) rounded, exact where u - 1 loses nothing, i.e. far from 0).
// expm1_from_exp takes u = vexp(x) when the caller has it already.
template <class T>
static inline T expm1_from_exp(T u, T x) {
  const T near_zero = (u - T(1)) * x / vlog(u);  // 0/0 when u rounds to 1: then x itself
  const bool tiny = u == T(1);
  const bool moderate = x > T(-20) && x < T(20);  // vlog needs a positive normal u
  return tiny ? x : (moderate ? near_zero : u - T(1));
}
template <class T>
static inline T vexpm1(T x) {
  return expm1_from_exp(vexp(x), x);
}

// 1 / (1 + exp(-x)), with exp only of -|x| so that it never overflows.
template <class T>
static inline T vsigmoid(T x) {
  const T e = vexp(x < T(0) ? x : -x);
  const T r = T(1) / (T(1) + e);
  return x >= T(0) ? r : e * r;
}

// tanh(|x|) = (1 - e) / (1 + e) with e = exp(-2|x|), which loses nothing
// once e < 1/e (|x| > 0.5). Nearer 0, for float, the Taylor series to x^15
// (truncation < 1e-8 relative at 0.5); for double, which would need twice the
// terms, -expm1(-2|x|) / (2 + expm1(-2|x|)).
static inline float vtanh(float x) {
  const float a = x < 0.0f ? -x : x;
  const float e = vexp(-2.0f * a);
  const float a2 = a * a;
  float p = -929569.0f / 638512875.0f;
  p = p * a2 + 21844.0f / 6081075.0f;
  p = p * a2 + -1382.0f / 155925.0f;
  p = p * a2 + 62.0f / 2835.0f;
  p = p * a2 + -17.0f / 315.0f;
  p = p * a2 + 2.0f / 15.0f;
  p = p * a2 + -1.0f / 3.0f;
  const float t = a > 0.5f ? (1.0f - e) / (1.0f + e) : a + a * a2 * p;
  return x < 0.0f ? -t : (x == 0.0f ? x : t);  // tanh(-0) = -0
}
static inline double vtanh(double x) {
  const double a = x < 0.0 ? -x : x;
  const double e = vexp(-2.0 * a);
  const double m = expm1_from_exp(e, -2.0 * a);
  const double t = a > 0.5 ? (1.0 - e) / (1.0 + e) : -m / (2.0 + m);
  return x < 0.0 ? -t : (x == 0.0 ? x : t);
}

// p[0, n) = act(p[0, n)), one vectorised pass per activation.
template <class T>
static inline void apply_activation(T* p, index_t n, Act act) {
  switch (act) {
    case Act::relu:
#pragma omp simd
      for (index_t i = 0; i < n; ++i) p[i] = p[i] < T(0) ? T(0) : p[i];  // NaN stays NaN
      break;
    case Act::sigmoid:
#pragma omp simd
      for (index_t i = 0; i < n; ++i) p[i] = vsigmoid(p[i]);
      break;
    case Act::tanh:
#pragma omp simd
      for (index_t i = 0; i < n; ++i) p[i] = vtanh(p[i]);
      break;
    default:
      break;
  }
}

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
