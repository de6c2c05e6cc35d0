// exp() and log() written so that GCC vectorizes loops that call them:
// branch-free, no library call. Included only by ISA translation units, so they
// are compiled at each instruction set's vector width. Accuracy: a few ulp.
#pragma once
#include <cstdint>

namespace fastnn {
namespace FASTNN_ISA_NS {

// exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln2 / 2, exp(r) by its
// Taylor polynomial (degree 7 for float, 12 for double: truncation < 1 ulp).
static inline float vexp(float x) {
  const float lo = -86.5f;  // keeps 2^n a normal number
  const float xc = x < lo ? lo : (x > 88.0f ? 88.0f : x);
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
  // The exponent is added in unsigned arithmetic: shifting a negative int is undefined.
  const std::uint32_t n_bits = (__builtin_bit_cast(std::uint32_t, t) - 0x4B400000u) << 23;
  const std::uint32_t bits = __builtin_bit_cast(std::uint32_t, p) + n_bits;
  const float e = __builtin_bit_cast(float, bits);
  // x != x keeps NaN; below lo the true value is (denormal or) zero.
  return x != x ? x : (x < lo ? 0.0f : (x > 88.0f ? x * 1e30f * 1e30f : e));
}

static inline double vexp(double x) {
  const double lo = -707.0;
  const double xc = x < lo ? lo : (x > 709.0 ? 709.0 : x);
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
  const std::uint64_t n_bits = (__builtin_bit_cast(std::uint64_t, t) - 0x4338000000000000ull) << 52;
  const std::uint64_t bits = __builtin_bit_cast(std::uint64_t, p) + n_bits;
  const double e = __builtin_bit_cast(double, bits);
  return x != x ? x : (x < lo ? 0.0 : (x > 709.0 ? x * 1e300 * 1e300 : e));
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

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
