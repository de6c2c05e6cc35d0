// Tiny per-width SIMD shim shared by the ISA translation units (*_isa.cpp).
//
// Each ISA TU is compiled with its own flags; the vector width follows the
// predefined macros: 512-bit with __AVX512F__, 256-bit with __AVX2__ (+FMA),
// else 128-bit SSE2. Everything here is static inline or lives in the ISA
// namespace, so no out-of-line copy compiled with AVX-512 can leak into the
// generic path through the linker.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "common.h"
#include "vector_math.h"

#ifndef FASTNN_ISA_NS
#error "simd.h is only for ISA translation units (FASTNN_ISA_NS must be defined)"
#endif

#if defined(__AVX512F__)
#define FASTNN_VBYTES 64
#elif defined(__AVX2__) && defined(__FMA__)
#define FASTNN_VBYTES 32
#else
#define FASTNN_VBYTES 16
#endif

namespace fastnn {
namespace FASTNN_ISA_NS {
namespace simd {

typedef float vf __attribute__((vector_size(FASTNN_VBYTES)));
typedef double vd __attribute__((vector_size(FASTNN_VBYTES)));
// Unaligned, aliasing-safe views for loads/stores from arbitrary user memory.
typedef float vf_u __attribute__((vector_size(FASTNN_VBYTES), aligned(4), may_alias));
typedef double vd_u __attribute__((vector_size(FASTNN_VBYTES), aligned(8), may_alias));

template <class T> struct VT;
template <> struct VT<float> {
  typedef vf V;
  typedef vf_u U;
  static constexpr int W = FASTNN_VBYTES / 4;
};
template <> struct VT<double> {
  typedef vd V;
  typedef vd_u U;
  static constexpr int W = FASTNN_VBYTES / 8;
};

static inline vf load(const float* p) { return *reinterpret_cast<const vf*>(p); }  // aligned
static inline vd load(const double* p) { return *reinterpret_cast<const vd*>(p); }
static inline vf loadu(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
static inline vd loadu(const double* p) { return *reinterpret_cast<const vd_u*>(p); }
static inline void store(float* p, vf v) { *reinterpret_cast<vf*>(p) = v; }
static inline void store(double* p, vd v) { *reinterpret_cast<vd*>(p) = v; }
static inline void storeu(float* p, vf v) { *reinterpret_cast<vf_u*>(p) = v; }
static inline void storeu(double* p, vd v) { *reinterpret_cast<vd_u*>(p) = v; }

#if FASTNN_VBYTES == 64
static inline vf set1(float x) { return (vf)_mm512_set1_ps(x); }
static inline vd set1(double x) { return (vd)_mm512_set1_pd(x); }
static inline vf fma(vf a, vf b, vf c) { return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }
static inline vd fma(vd a, vd b, vd c) { return (vd)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c); }
#elif FASTNN_VBYTES == 32
static inline vf set1(float x) { return (vf)_mm256_set1_ps(x); }
static inline vd set1(double x) { return (vd)_mm256_set1_pd(x); }
static inline vf fma(vf a, vf b, vf c) { return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
static inline vd fma(vd a, vd b, vd c) { return (vd)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c); }
#else
static inline vf set1(float x) { return (vf)_mm_set1_ps(x); }
static inline vd set1(double x) { return (vd)_mm_set1_pd(x); }
static inline vf fma(vf a, vf b, vf c) { return a * b + c; }  // no FMA in baseline x86-64
static inline vd fma(vd a, vd b, vd c) { return a * b + c; }
#endif

// Lanes of v that are not zero (NaN counts as not zero), as bits of an int.
#if FASTNN_VBYTES == 64
static inline unsigned nonzero_mask(vf v) { return _mm512_cmp_ps_mask((__m512)v, _mm512_setzero_ps(), _CMP_NEQ_UQ); }
static inline unsigned nonzero_mask(vd v) { return _mm512_cmp_pd_mask((__m512d)v, _mm512_setzero_pd(), _CMP_NEQ_UQ); }
#elif FASTNN_VBYTES == 32
static inline unsigned nonzero_mask(vf v) {
  return _mm256_movemask_ps(_mm256_cmp_ps((__m256)v, _mm256_setzero_ps(), _CMP_NEQ_UQ));
}
static inline unsigned nonzero_mask(vd v) {
  return _mm256_movemask_pd(_mm256_cmp_pd((__m256d)v, _mm256_setzero_pd(), _CMP_NEQ_UQ));
}
#else
static inline unsigned nonzero_mask(vf v) { return _mm_movemask_ps(_mm_cmpneq_ps((__m128)v, _mm_setzero_ps())); }
static inline unsigned nonzero_mask(vd v) { return _mm_movemask_pd(_mm_cmpneq_pd((__m128d)v, _mm_setzero_pd())); }
#endif

// Bit r (r < 64) set where masks[r] has any bit of `pattern`.
static inline std::uint64_t any_bits_of(const std::uint16_t (&masks)[64], std::uint16_t pattern) {
#if FASTNN_VBYTES == 64
  const __m512i p = _mm512_set1_epi16(static_cast<short>(pattern));
  const std::uint64_t lo = _mm512_test_epi16_mask(_mm512_loadu_si512(masks), p);
  const std::uint64_t hi = _mm512_test_epi16_mask(_mm512_loadu_si512(masks + 32), p);
  return lo | hi << 32;
#else
  std::uint64_t bits = 0;
  for (int r = 0; r < 64; ++r) bits |= std::uint64_t((masks[r] & pattern) != 0) << r;
  return bits;
#endif
}

#if FASTNN_VBYTES == 64
// The first n (< = W) lanes from / to memory; the other lanes read as zero and
// are not written, so nothing past p + n is touched.
static inline vf load_first(const float* p, int n) {
  return (vf)_mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p);
}
static inline vd load_first(const double* p, int n) {
  return (vd)_mm512_maskz_loadu_pd(__mmask8((1u << n) - 1), p);
}
static inline void store_first(float* p, int n, vf v) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), (__m512)v); }
static inline void store_first(double* p, int n, vd v) {
  _mm512_mask_storeu_pd(p, __mmask8((1u << n) - 1), (__m512d)v);
}
#endif

#if FASTNN_VBYTES == 64
static inline vf round_to_integer(vf v) {
  return (vf)_mm512_roundscale_ps((__m512)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline vd round_to_integer(vd v) {
  return (vd)_mm512_roundscale_pd((__m512d)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// lo <= x <= hi; max and min return their second operand for a NaN, so a NaN stays.
static inline vf clamp(vf x, float lo, float hi) {
  return (vf)_mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), (__m512)x));
}
static inline vd clamp(vd x, double lo, double hi) {
  return (vd)_mm512_min_pd(_mm512_set1_pd(hi), _mm512_max_pd(_mm512_set1_pd(lo), (__m512d)x));
}
static inline vf scalef(vf p, vf n) { return (vf)_mm512_scalef_ps((__m512)p, (__m512)n); }
static inline vd scalef(vd p, vd n) { return (vd)_mm512_scalef_pd((__m512d)p, (__m512d)n); }

// exp of a whole vector: vexp's reduction and polynomial (vector_math.h), with
// 2^n applied by one vscalef instead of vexp's integer work and two products
// (vscalef rounds gradual underflow and gives inf and NaN by itself), because
// the narrow softmax rows spend most of their time in exp.
template <class V, class T = typename std::remove_reference<decltype(V{}[0])>::type>
static inline V exp(V x) {
  typedef FloatConstants<T> C;
  const V xc = clamp(x, C::exp_lo, C::exp_hi);
  const V n = round_to_integer(xc * C::log2e);
  return scalef(exp_taylor<T>((xc - n * C::ln2_hi) - n * C::ln2_lo), n);
}
#endif

// Two bfloat16 values side by side, the first in the low half: the unit VDPBF16PS multiplies.
typedef std::uint32_t Bf16Pair;

#ifdef __AVX512BF16__
// lo and hi rounded to bf16 as a pair. Rounding is to nearest even by
// VCVTNE(2)PS2BF16 everywhere, the scalar tails included, so that a value rounds
// alike in any tile and any kernel.
static inline Bf16Pair bf16_pair(float lo, float hi) {
  return static_cast<Bf16Pair>(_mm_cvtness_sbh(lo)) | (static_cast<Bf16Pair>(_mm_cvtness_sbh(hi)) << 16);
}

// The 16 pairs (r0[j], r1[j]), j < 16: two rows of 16 values, rounded and zipped.
static inline __m512i zip_pairs(__m512 r0, __m512 r1) {
  alignas(64) static const short kZip[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                             8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(r1, r0);  // r0 in the low 16 values, r1 in the high
  return _mm512_permutexvar_epi16(_mm512_load_si512(kZip), both);
}
#endif

// Interleave the low (high) halves of a and b: {a0,b0,a1,b1,...}.
template <class V, std::size_t... I>
static inline V zip_lo_(V a, V b, std::index_sequence<I...>) {
  constexpr std::size_t W = sizeof...(I);
  return __builtin_shufflevector(a, b, ((I % 2) ? W + I / 2 : I / 2)...);
}
template <class V, std::size_t... I>
static inline V zip_hi_(V a, V b, std::index_sequence<I...>) {
  constexpr std::size_t W = sizeof...(I);
  return __builtin_shufflevector(a, b, ((I % 2) ? W + W / 2 + I / 2 : W / 2 + I / 2)...);
}

// In-register transpose of a W x W block held in r[0..W) (W = lanes of V):
// log2(W) rounds of perfect-shuffle interleaves.
template <class T>
static inline void transpose(typename VT<T>::V* r) {
  typedef typename VT<T>::V V;
  constexpr int W = VT<T>::W;
  for (int s = 1; s < W; s *= 2) {
    V t[W];
#pragma GCC unroll 16
    for (int i = 0; i < W / 2; ++i) {
      t[2 * i] = zip_lo_(r[i], r[i + W / 2], std::make_index_sequence<W>{});
      t[2 * i + 1] = zip_hi_(r[i], r[i + W / 2], std::make_index_sequence<W>{});
    }
#pragma GCC unroll 16
    for (int i = 0; i < W; ++i) r[i] = t[i];
  }
}

}  // namespace simd
}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
