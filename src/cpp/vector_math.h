// exp() and log() written so that GCC vectorizes loops that call them:
// branch-free, no library call. They live in the namespace of the instruction
// set being compiled (FASTNN_ISA_NS), so each is compiled at that set's vector
// width. Accuracy: a few ulp.
#pragma once
#include <cstdint>

namespace fastnn {
namespace FASTNN_ISA_NS {

// The bit layout of float and double, and the constants of vexp and vlog.
template <class T> struct FloatConstants;
template <> struct FloatConstants<float> {
  typedef std::uint32_t Bits;
  typedef std::int32_t SignedBits;
  static constexpr int mantissa_bits = 23;
  static constexpr Bits exponent_bias = 127;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr Bits round_magic_bits = 0x4B400000u;
  static constexpr float exp_lo = -104.0f, exp_hi = 89.0f;  // exp is 0 below, inf above
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;  // ln 2 = hi + lo
  static constexpr int exp_degree = 7;                                       // truncation < 1 ulp
  static constexpr Bits bits_of_0_6875 = 0x3F300000u;
  static constexpr int log_degree = 11;
};
template <> struct FloatConstants<double> {
  typedef std::uint64_t Bits;
  typedef std::int64_t SignedBits;
  static constexpr int mantissa_bits = 52;
  static constexpr Bits exponent_bias = 1023;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr Bits round_magic_bits = 0x4338000000000000ull;
  static constexpr double exp_lo = -746.0, exp_hi = 710.0;
  static constexpr double log2e = 1.4426950408889634;
  static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  static constexpr int exp_degree = 12;
  static constexpr Bits bits_of_0_6875 = 0x3FE6000000000000ull;
  static constexpr int log_degree = 23;
};

// 1 / k! for k = 0 ... N: the Taylor coefficients of exp.
template <class T, int N>
struct InverseFactorials {
  T c[N + 1];
  constexpr InverseFactorials() : c() {
    T factorial = 1;
    for (int k = 0; k <= N; ++k) {
      if (k > 0) factorial *= T(k);
      c[k] = T(1) / factorial;
    }
  }
};
template <class T>
constexpr InverseFactorials<T, FloatConstants<T>::exp_degree> kExpTaylor{};

// exp(r) for |r| <= ln2 / 2 by its Taylor polynomial; r is a T or a vector of T.
template <class T, class V>
static inline V exp_taylor(V r) {
  constexpr int degree = FloatConstants<T>::exp_degree;
  V p = V{} + kExpTaylor<T>.c[degree];
#pragma GCC unroll 16
  for (int k = degree - 1; k >= 0; --k) p = p * r + kExpTaylor<T>.c[k];
  return p;
}

// exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln2 / 2, exp(r) by its
// Taylor polynomial (degree 7 for float, 12 for double: truncation < 1 ulp).
// 2^n is applied as two normal powers of two, 2^(n - n/2) and then 2^(n/2), so
// that results below the smallest normal number underflow gradually (rounded
// once, by the last product) and results past the largest overflow to inf;
// x is clamped where the result is 0 or inf anyway. A NaN passes the clamps
// and the arithmetic as NaN. No selects: the loops calling this vectorise.
template <class T>
static inline T vexp(T x) {
  typedef FloatConstants<T> C;
  typedef typename C::Bits Bits;
  const T xc = x < C::exp_lo ? C::exp_lo : (x > C::exp_hi ? C::exp_hi : x);
  const T t = xc * C::log2e + C::round_magic;
  const T n = t - C::round_magic;
  const T p = exp_taylor<T>((xc - n * C::ln2_hi) - n * C::ln2_lo);
  // n and half = round(n / 2) as two's complement bits, in unsigned arithmetic
  // (a NaN's bits make a meaningless power of two, which the NaN p absorbs).
  // |half| and |n - half| are at most 76 (float) or 539 (double): both powers
  // of two are normal numbers.
  const Bits n_bits = __builtin_bit_cast(Bits, t) - C::round_magic_bits;
  const Bits half_bits = __builtin_bit_cast(Bits, n * T(0.5) + C::round_magic) - C::round_magic_bits;
  const T first = __builtin_bit_cast(T, Bits((n_bits - half_bits + C::exponent_bias) << C::mantissa_bits));
  const T second = __builtin_bit_cast(T, Bits((half_bits + C::exponent_bias) << C::mantissa_bits));
  return p * first * second;
}

// log(x) for positive normal x (NaN stays NaN): x = 2^k * z with z in
// [0.6875, 1.375), and log z = 2 atanh(u) = 2 (u + u^3/3 + u^5/5 + ...) with
// u = (z - 1) / (z + 1), |u| < 0.19 (series to u^11 for float, u^23 for double).
template <class T>
static inline T vlog(T x) {
  typedef FloatConstants<T> C;
  typedef typename C::Bits Bits;
  const Bits bits = __builtin_bit_cast(Bits, x);
  const Bits shifted = bits - C::bits_of_0_6875;
  const T k = T(typename C::SignedBits(shifted) >> C::mantissa_bits);
  const T z = __builtin_bit_cast(T, Bits(bits - (shifted & ~((Bits(1) << C::mantissa_bits) - 1))));
  const T u = (z - T(1)) / (z + T(1));
  const T u2 = u * u;
  T p = T(1) / T(C::log_degree);
#pragma GCC unroll 16
  for (int d = C::log_degree - 2; d >= 1; d -= 2) p = p * u2 + T(1) / T(d);
  const T log_z = T(2) * u * p;
  const T y = (k * C::ln2_hi + log_z) + k * C::ln2_lo;
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

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
