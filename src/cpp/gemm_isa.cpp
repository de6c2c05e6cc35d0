// GEMM kernels, compiled once per instruction set (see fastnn_add_isa in
// CMakeLists.txt): FASTNN_ISA_NS is generic (SSE2), avx2 (AVX2+FMA), avx512, or
// avx512_bf16, whose copy holds only the bfloat16 GEMM (its float32 "highest"
// and float64 products are avx512's).
//
//   C[M,N] = act(op(A) @ op(B) + (accumulate ? C : 0) + bias[N]) [* gate_act'(gate)]
//
// Design (GotoBLAS/BLIS style, row-major C, vectors along N):
//  * op(B) is packed per (KC x NC) block into NR-wide micro-panels, k-major,
//    zero-padded to a whole number of vectors (and K to a multiple of KU).
//    With trans_b (B stored (N,K)) the panels are built with in-register
//    W x W transposes straight from B's layout.
//  * op(A) is packed per (MC x KC) block into MR-row micro-panels (the last
//    one as tall as the edge kernel it feeds). Without trans_a a panel is stored in
//    chunks of KU k-values per row ([q][r][u]: plain contiguous copies); with
//    trans_a (A stored (K,M)) it is k-major ([k][r]: contiguous copies again).
//    The microkernel knows both layouts. Loop order jc > pc > ic > ir > jr:
//    the B block sits in L2, each A micro-panel stays in L1 while the kernel
//    sweeps every B micro-panel of the block.
//  * Register-blocked MR x (NV vectors) microkernels (AVX-512: 14x32 float,
//    14x16 double; AVX2: 6x16 / 6x8; SSE2: 6x8 / 6x4). Edge panels run the
//    kernel of the next height up in {1, 2, 4, ..., MR} (zero rows packed) and
//    narrow B panels a kernel with fewer vectors, so edges cost almost no
//    padded work. The store of the last K block applies (accumulate) + bias +
//    activation (relu in registers; sigmoid/tanh a vectorised pass over the
//    tile) or the gate (in registers); earlier K blocks accumulate into C.
//    With accumulate == false C is written before it is ever read.
//  * Threads: C is cut into a tm x tn grid of MR/NR-aligned blocks, one per
//    thread, each thread packing its own operands (no barriers). The grid is
//    picked to minimise per-thread work incl. packing, so M=128 still keeps
//    two threads busy by splitting N.
//  * Packing buffers are thread_local, grow-only: no allocation per call after
//    warm-up, and nothing shared between concurrent calls.
//  * bf16 ("medium" precision, AVX512_BF16): the same structure with panels of
//    Bf16Pair, k taken two at a time. Packing rounds float32 to bf16 (round to
//    nearest even, VCVTNE2PS2BF16) and puts k and k+1 of a row side by side;
//    the microkernel's step is one VDPBF16PS per vector (two k per lane) into
//    float32 accumulators, so the epilogues are the float ones.
// Everything here is in the ISA namespace and/or has internal linkage.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "dispatch.h"
#include "parallel.h"
#include "scratch.h"
#include "simd.h"

namespace fastnn {
namespace FASTNN_ISA_NS {
namespace {

using simd::VT;
using Relu = Activation<Act::relu>;  // the activation applied in registers

// ---------------------------------------------------------------- config ----
constexpr int KU = 8;  // k-chunk of the packed panels, in packed elements (K is padded to it)

// The element of the bf16 panels: k (low half) and k + 1 of one row of op(A) or column of op(B).
using simd::Bf16Pair;

// T is the type of A, B and C; P the element of the packed panels (T, or
// Bf16Pair). KP is the number of k per packed element.
template <class T, class P = T> struct Cfg;
#if FASTNN_VBYTES == 64
// 32 zmm registers: 14x2 accumulators + 2 B vectors + 1 broadcast.
template <> struct Cfg<float> { static constexpr int MR = 14, NV = 2, KC = 256, MC = 224, NC = 512, KP = 1; };
template <> struct Cfg<double> { static constexpr int MR = 14, NV = 2, KC = 256, MC = 112, NC = 256, KP = 1; };
#ifdef __AVX512BF16__
// Half the bytes per k of float panels. KC is four times the float one: an A
// micro-panel (14 x 1024 bf16) still fits L1, and a K up to 1024 (an MLP's
// layers) takes one block, so C is stored once instead of read back per block.
template <> struct Cfg<float, Bf16Pair> {
  static constexpr int MR = 14, NV = 2, KC = 1024, MC = 224, NC = 512, KP = 2;
};
#endif
#elif FASTNN_VBYTES == 32
// 16 ymm registers: 6x2 accumulators + 2 B vectors + 1 broadcast.
template <> struct Cfg<float> { static constexpr int MR = 6, NV = 2, KC = 256, MC = 192, NC = 512, KP = 1; };
template <> struct Cfg<double> { static constexpr int MR = 6, NV = 2, KC = 256, MC = 96, NC = 256, KP = 1; };
#else
// 16 xmm registers, no FMA (mul + add needs a temporary).
template <> struct Cfg<float> { static constexpr int MR = 6, NV = 2, KC = 256, MC = 192, NC = 512, KP = 1; };
template <> struct Cfg<double> { static constexpr int MR = 6, NV = 2, KC = 256, MC = 96, NC = 256, KP = 1; };
#endif

// The microkernel's multiply-add of a broadcast A element by vectors of B
// elements: an FMA for T panels, VDPBF16PS (two k per lane) for bf16 panels.
template <class T, class P> struct PanelMath;
template <class T> struct PanelMath<T, T> {
  typedef typename VT<T>::V V;
  typedef V A;
  typedef V B;
  static inline A broadcast(T a) { return simd::set1(a); }
  static inline B load_b(const T* p) { return simd::load(p); }
  static inline V madd(V acc, A a, B b) { return simd::fma(a, b, acc); }
};
#ifdef __AVX512BF16__
template <> struct PanelMath<float, Bf16Pair> {
  typedef VT<float>::V V;
  typedef __m512bh A;
  typedef __m512bh B;
  static inline A broadcast(Bf16Pair a) { return (__m512bh)_mm512_set1_epi32(static_cast<int>(a)); }
  static inline B load_b(const Bf16Pair* p) { return (__m512bh)_mm512_load_si512(p); }
  static inline V madd(V acc, A a, B b) { return (V)_mm512_dpbf16_ps((__m512)acc, a, b); }
};
#endif

// Unrolling of the microkernel's k-chunk loop. With only 16 xmm registers and
// no FMA, GCC's scheduling of the unrolled loop spills the accumulators, so
// the SSE2 kernel keeps the chunk loop rolled.
#if FASTNN_VBYTES == 16
#define FASTNN_UNROLL_KU _Pragma("GCC unroll 1")
#else
#define FASTNN_UNROLL_KU _Pragma("GCC unroll 8")
#endif

static inline index_t imin(index_t a, index_t b) { return a < b ? a : b; }
static inline index_t cdiv(index_t a, index_t b) { return (a + b - 1) / b; }
static inline index_t rup(index_t a, index_t b) { return cdiv(a, b) * b; }

// Prefetch n elements starting at p (one prefetch per cache line), for reading.
template <class T>
static inline void prefetch_row(const T* p, index_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  const index_t bytes = n * static_cast<index_t>(sizeof(T));
  for (index_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 3);
  __builtin_prefetch(c + bytes - 1, 0, 3);
}
constexpr int PD = 2;  // rows of prefetch distance while packing

// ------------------------------------------------------ scratch buffers ----
static ScratchBuf& thread_scratch() {
  static thread_local ScratchBuf buf;
  return buf;
}

// --------------------------------------------------------------- epilogue ----
template <class T>
struct Epi {
  const T* bias;  // bias of the tile's first column (null: none)
  Act act;
  bool load_c;    // add C's current contents
  bool last;      // last K block: apply bias + act, or the gate
  const T* gate;  // gate of the tile's first element, row stride ldc (null: none)
  Act gate_act;
};

// Epilogue from a finished accumulator tile tmp (m x n valid of an aligned
// tile with row stride ldt) into C: edge tiles and the small kernels.
template <class T>
static void epi_tile(const T* tmp, int ldt, int m, int n, T* C, index_t ldc, const Epi<T>& e) {
  typedef typename VT<T>::V V;
  constexpr int W = VT<T>::W;
  const bool add_bias = e.last && e.bias != nullptr;
  const bool relu = e.last && e.act == Act::relu;
  const bool gated = e.last && e.gate != nullptr;
  const int nvec = n / W * W;
  for (int r = 0; r < m; ++r) {
    T* c = C + r * ldc;
    const T* t = tmp + r * ldt;
    const T* gate = gated ? e.gate + r * ldc : nullptr;
    for (int j = 0; j < nvec; j += W) {
      V v = simd::load(t + j);
      if (e.load_c) v += simd::loadu(c + j);
      if (add_bias) v += simd::loadu(e.bias + j);
      if (relu) v = Relu::forward(v, T(0));
      if (gated) v = activation_grad<T>(simd::loadu(gate + j), v, e.gate_act);
      simd::storeu(c + j, v);
    }
#if FASTNN_VBYTES == 64
    // Masked: a narrow output (10 logits) is mostly tail.
    if (nvec < n) {
      const int rest = n - nvec;
      V v = simd::load(t + nvec);
      if (e.load_c) v += simd::load_first(c + nvec, rest);
      if (add_bias) v += simd::load_first(e.bias + nvec, rest);
      if (relu) v = Relu::forward(v, T(0));
      if (gated) v = activation_grad<T>(simd::load_first(gate + nvec, rest), v, e.gate_act);
      simd::store_first(c + nvec, rest, v);
    }
#else
    for (int j = nvec; j < n; ++j) {
      T v = t[j];
      if (e.load_c) v += c[j];
      if (add_bias) v += e.bias[j];
      if (relu) v = Relu::forward(v, T(0));
      if (gated) v = activation_grad<T>(gate[j], v, e.gate_act);
      c[j] = v;
    }
#endif
  }
  if (e.last && needs_pass(e.act))
    for (int r = 0; r < m; ++r) apply_activation(C + r * ldc, n, e.act);
}

// ------------------------------------------------------------ microkernel ----
// Tile of M_ x (NV vectors) = sum over nq chunks of KU k-values of
// A-panel x B-panel, then the epilogue into the valid m x n corner of C.
// A panel (height M_): AKM ? [q][u][r] : [q][r][u]. B panel: [k][NV*W], aligned.
// (k, u counted in packed elements P: one k of T, or a Bf16Pair of two k.)
// Edge panels use the next kernel height up (see kheight) with zero rows.
template <class T, class P, int M_, int NV, bool AKM>
static void ukernel(index_t nq, const P* __restrict A, const P* __restrict B, T* __restrict C,
                    index_t ldc, int m, int n, const Epi<T>& e) {
  typedef typename VT<T>::V V;
  typedef PanelMath<T, P> PM;
  constexpr int W = VT<T>::W;
  constexpr int NRp = NV * W;
  // The full-size kernel is the hot one: unrolled chunk loop, epilogue
  // straight from registers. The edge kernels are rarely hot; keeping them
  // small saves a lot of compile time.
  constexpr bool hot = M_ == Cfg<T, P>::MR;

  for (int r = 0; r < m; ++r) {
    __builtin_prefetch(C + r * ldc, 1, 3);
    if (NRp * sizeof(T) > 64) __builtin_prefetch(C + r * ldc + NRp - 1, 1, 3);
  }

  V acc[M_][NV];
#pragma GCC unroll 32
  for (int r = 0; r < M_; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[r][j] = V{};

  // One k step: NV vectors of B times M_ broadcasts of A.
  auto step = [&](const P* __restrict a_, const P* __restrict b_, int u) __attribute__((always_inline)) {
    typename PM::B b[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) b[j] = PM::load_b(b_ + u * NRp + j * W);
#pragma GCC unroll 32
    for (int r = 0; r < M_; ++r) {
      const typename PM::A a = PM::broadcast(a_[AKM ? u * M_ + r : r * KU + u]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[r][j] = PM::madd(acc[r][j], a, b[j]);
    }
  };
  if constexpr (hot) {
    for (index_t q = 0; q < nq; ++q) {
      FASTNN_UNROLL_KU
      for (int u = 0; u < KU; ++u) step(A, B, u);
      A += M_ * KU;
      B += KU * NRp;
    }
    if (m == M_ && n == NRp) {
      const bool add_bias = e.last && e.bias != nullptr;
      const bool relu = e.last && e.act == Act::relu;
      const bool gated = e.last && e.gate != nullptr;
      V bv[NV];
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) bv[j] = add_bias ? simd::loadu(e.bias + j * W) : V{};
#pragma GCC unroll 32
      for (int r = 0; r < M_; ++r) {
        T* c = C + r * ldc;
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) {
          V v = acc[r][j];
          if (e.load_c) v += simd::loadu(c + j * W);
          v += bv[j];
          if (relu) v = Relu::forward(v, T(0));
          if (gated) v = activation_grad<T>(simd::loadu(e.gate + r * ldc + j * W), v, e.gate_act);
          simd::storeu(c + j * W, v);
        }
      }
      if (e.last && needs_pass(e.act))
        for (int r = 0; r < M_; ++r) apply_activation(C + r * ldc, NRp, e.act);
      return;
    }
  } else {
    for (index_t q = 0; q < nq; ++q) {
#pragma GCC unroll 1
      for (int u = 0; u < KU; ++u) step(A, B, u);
      A += M_ * KU;
      B += KU * NRp;
    }
  }
  alignas(64) T tmp[M_ * NRp];
#pragma GCC unroll 32
  for (int r = 0; r < M_; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) simd::store(tmp + r * NRp + j * W, acc[r][j]);
  epi_tile(tmp, NRp, m, n, C, ldc, e);
}

template <class T, class P>
using KFn = void (*)(index_t, const P*, const P*, T*, index_t, int, int, const Epi<T>&);

// Kernel heights: 1, then even heights up to MR (an edge of m rows runs the
// next height up, its extra packed rows zero). Halves the instantiations.
static_assert(Cfg<float>::MR % 2 == 0 && Cfg<double>::MR % 2 == 0, "MR must be even");
template <class T, class P>
static inline int kheight(index_t m) {
  return m <= 1 ? 1 : static_cast<int>(imin(rup(m, 2), Cfg<T, P>::MR));
}

template <class T, class P, int NV, bool AKM, std::size_t... I>
static inline KFn<T, P> kpick_h(int h, std::index_sequence<I...>) {
  static constexpr KFn<T, P> tab[] = {&ukernel<T, P, I == 0 ? 1 : 2 * static_cast<int>(I), NV, AKM>...};
  return tab[h / 2];
}

template <class T, class P, int NV, bool AKM>
static inline KFn<T, P> kpick_nv(int h, int nv) {
  if constexpr (NV > 1) {
    if (nv < NV) return kpick_nv<T, P, NV - 1, AKM>(h, nv);
  }
  return kpick_h<T, P, NV, AKM>(h, std::make_index_sequence<Cfg<T, P>::MR / 2 + 1>{});
}

// Kernel for a panel of height h = kheight(m) and nv vectors of B.
template <class T, class P>
static inline KFn<T, P> kpick(bool akm, int h, int nv) {
  return akm ? kpick_nv<T, P, Cfg<T, P>::NV, true>(h, nv) : kpick_nv<T, P, Cfg<T, P>::NV, false>(h, nv);
}

// ---------------------------------------------------------------- packing ----
// B block: columns [j0, j0+nc), k rows [p0, p0+kc) -> NR-wide panels, each
// kcp x NRp (NRp = NR, or nv*W for the last, narrower panel), zero padded.
template <class T>
static void pack_b(const GemmArgs<T>& g, index_t j0, index_t nc, index_t p0, index_t kc,
                   index_t kcp, T* __restrict dst) {
  typedef typename VT<T>::V V;
  constexpr int W = VT<T>::W;
  constexpr int NR = Cfg<T>::NV * W;
  const index_t nfull = nc / NR * NR;  // columns in full panels
  if (!g.trans_b) {
    // Row by row (sequential reads of B), scattering into the panels.
    const T* s = g.B + p0 * g.ldb + j0;
    for (index_t k = 0; k < kc; ++k) {
      const T* sk = s + k * g.ldb;
      if (k + PD < kc) prefetch_row(sk + PD * g.ldb, nfull);
      T* dk = dst + k * NR;
      for (index_t jr = 0; jr < nfull; jr += NR) {
#pragma GCC unroll 8
        for (int j = 0; j < NR; j += W) simd::store(dk + jr * kcp + j, simd::loadu(sk + jr + j));
      }
    }
  } else {
    // B stored (N,K): column j of op(B) is row j of B, contiguous in k.
    // W x W blocks are transposed in registers.
    for (index_t jr = 0; jr < nfull; jr += NR) {
      const T* s = g.B + (j0 + jr) * g.ldb + p0;
      T* d = dst + jr * kcp;
      for (int jv = 0; jv < NR; jv += W) {
        index_t k = 0;
        for (; k + W <= kc; k += W) {
          if (k % 64 == 0 && k + 64 < kc)  // next 64 k of these W rows
            for (int t = 0; t < W; ++t) prefetch_row(s + (jv + t) * g.ldb + k + 64, imin(64, kc - k - 64));
          V r[W];
#pragma GCC unroll 16
          for (int t = 0; t < W; ++t) r[t] = simd::loadu(s + (jv + t) * g.ldb + k);
          simd::transpose<T>(r);
#pragma GCC unroll 16
          for (int t = 0; t < W; ++t) simd::store(d + (k + t) * NR + jv, r[t]);
        }
        for (; k < kc; ++k)
          for (int t = 0; t < W; ++t) d[k * NR + jv + t] = s[(jv + t) * g.ldb + k];
      }
    }
  }
  // K padding of the full panels.
  for (index_t jr = 0; jr < nfull; jr += NR)
    for (index_t k = kc; k < kcp; ++k)
#pragma GCC unroll 8
      for (int j = 0; j < NR; j += W) simd::store(dst + jr * kcp + k * NR + j, V{});
  // Last, narrower panel (scalar; zero padded to whole vectors).
  if (nfull < nc) {
    const int nr = static_cast<int>(nc - nfull);
    const int NRp = static_cast<int>(rup(nr, W));
    T* d = dst + nfull * kcp;
    for (index_t k = 0; k < kcp; ++k) {
      for (int j = 0; j < NRp; ++j) {
        T v = T(0);
        if (k < kc && j < nr)
          v = g.trans_b ? g.B[(j0 + nfull + j) * g.ldb + p0 + k] : g.B[(p0 + k) * g.ldb + j0 + nfull + j];
        d[k * NRp + j] = v;
      }
    }
  }
}

// A block: rows [i0, i0+mc), k [p0, p0+kc) -> MR-row micro-panels, each
// padded to kcp; the last one is kheight(rows left) tall (zero rows below).
// !trans_a: panel layout [q][r][u] (KU contiguous k per row); trans_a: [k][r].
// Either way the source is read sequentially.
template <class T>
static void pack_a(const GemmArgs<T>& g, index_t i0, index_t mc, index_t p0, index_t kc, index_t kcp,
                   T* __restrict dst) {
  constexpr int MR = Cfg<T>::MR;
  if (!g.trans_a) {
    const index_t kfull = kc / KU * KU;
    for (index_t ir = 0; ir < mc; ir += MR) {
      const int mr = static_cast<int>(imin(MR, mc - ir));
      const int h = kheight<T, T>(mr);
      T* dp = dst + ir * kcp;
      for (int r = 0; r < mr; ++r) {
        const T* s = g.A + (i0 + ir + r) * g.lda + p0;
        if (ir + r + PD < mc) prefetch_row(s + PD * g.lda, kc);
        T* d = dp + r * KU;
        for (index_t k = 0; k < kfull; k += KU) std::memcpy(d + k * h, s + k, KU * sizeof(T));
        if (kfull < kcp)
          for (int u = 0; u < KU; ++u) d[kfull * h + u] = (kfull + u < kc) ? s[kfull + u] : T(0);
      }
      for (int r = mr; r < h; ++r)
        for (index_t k = 0; k < kcp; k += KU)
          for (int u = 0; u < KU; ++u) dp[k * h + r * KU + u] = T(0);
    }
  } else {
    const index_t mfull = mc / MR * MR;
    const T* s = g.A + p0 * g.lda + i0;
    for (index_t k = 0; k < kc; ++k) {
      const T* sk = s + k * g.lda;
      if (k + PD < kc) prefetch_row(sk + PD * g.lda, mc);
      for (index_t ir = 0; ir < mfull; ir += MR) std::memcpy(dst + ir * kcp + k * MR, sk + ir, MR * sizeof(T));
    }
    for (index_t ir = 0; ir < mfull; ir += MR)
      for (index_t k = kc * MR; k < kcp * MR; ++k) dst[ir * kcp + k] = T(0);
    if (mfull < mc) {
      const int mr = static_cast<int>(mc - mfull);
      const int h = kheight<T, T>(mr);
      T* d = dst + mfull * kcp;
      for (index_t k = 0; k < kcp; ++k)
        for (int r = 0; r < h; ++r) d[k * h + r] = (k < kc && r < mr) ? s[k * g.lda + mfull + r] : T(0);
    }
  }
}

#ifdef __AVX512BF16__
// ----------------------------------------------------------- bf16 packing ----
// The same panels as pack_b / pack_a above, of Bf16Pair: k and k + 1 of a
// column of op(B) (row of op(A)) rounded to bf16 (simd::bf16_pair) and side by
// side; an odd kc's last pair has a zero partner.
using simd::bf16_pair;
using simd::zip_pairs;

// B block as bf16 panels: columns [j0, j0+nc), k rows [p0, p0+kc), kcp k per
// panel (a multiple of 2 * KU), each panel kcp / 2 rows of pairs.
static void pack_b(const GemmArgs<float>& g, index_t j0, index_t nc, index_t p0, index_t kc, index_t kcp,
                   Bf16Pair* __restrict dst) {
  constexpr int W = VT<float>::W;
  constexpr int NR = Cfg<float, Bf16Pair>::NV * W;
  const index_t depth = kcp / 2, pairs = cdiv(kc, 2);
  const index_t nfull = nc / NR * NR;
  auto at = [&](index_t k, index_t j) -> float {  // op(B)[p0 + k][j0 + j], zero past kc
    if (k >= kc) return 0.0f;
    return g.trans_b ? g.B[(j0 + j) * g.ldb + p0 + k] : g.B[(p0 + k) * g.ldb + j0 + j];
  };
  if (!g.trans_b) {
    // Two rows at a time (sequential reads of B), zipped in registers.
    const float* s = g.B + p0 * g.ldb + j0;
    for (index_t q = 0; q < pairs; ++q) {
      const float* s0 = s + 2 * q * g.ldb;
      const bool partner = 2 * q + 1 < kc;
      if (2 * (q + PD) + 1 < kc) {
        prefetch_row(s0 + 2 * PD * g.ldb, nfull);
        prefetch_row(s0 + (2 * PD + 1) * g.ldb, nfull);
      }
      Bf16Pair* d = dst + q * NR;
      for (index_t jr = 0; jr < nfull; jr += NR) {
#pragma GCC unroll 4
        for (int j = 0; j < NR; j += W) {
          const __m512 r0 = _mm512_loadu_ps(s0 + jr + j);
          const __m512 r1 = partner ? _mm512_loadu_ps(s0 + g.ldb + jr + j) : _mm512_setzero_ps();
          _mm512_store_si512(d + jr * depth + j, zip_pairs(r0, r1));
        }
      }
    }
  } else {
    // B stored (N,K): row j of B is column j of op(B), its pairs adjacent.
    // 16 rows x 32 k round to 16 rows x 16 pairs, transposed in registers as floats.
    for (index_t jr = 0; jr < nfull; jr += NR) {
      const float* s = g.B + (j0 + jr) * g.ldb + p0;
      Bf16Pair* d = dst + jr * depth;
      for (int jv = 0; jv < NR; jv += W) {
        index_t k = 0;
        for (; k + 2 * W <= kc; k += 2 * W) {
          if (k % 64 == 0 && k + 64 < kc)  // next 64 k of these W rows
            for (int t = 0; t < W; ++t) prefetch_row(s + (jv + t) * g.ldb + k + 64, imin(64, kc - k - 64));
          VT<float>::V r[W];
#pragma GCC unroll 16
          for (int t = 0; t < W; ++t) {
            const float* row = s + (jv + t) * g.ldb + k;
            r[t] = (VT<float>::V)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + W), _mm512_loadu_ps(row));
          }
          simd::transpose<float>(r);
#pragma GCC unroll 16
          for (int t = 0; t < W; ++t) simd::store(reinterpret_cast<float*>(d + (k / 2 + t) * NR + jv), r[t]);
        }
        for (; k < kc; k += 2)
          for (int t = 0; t < W; ++t) d[k / 2 * NR + jv + t] = bf16_pair(at(k, jr + jv + t), at(k + 1, jr + jv + t));
      }
    }
  }
  // K padding of the full panels.
  for (index_t jr = 0; jr < nfull; jr += NR)
    for (index_t q = pairs; q < depth; ++q)
      for (int j = 0; j < NR; j += W) _mm512_store_si512(dst + jr * depth + q * NR + j, _mm512_setzero_si512());
  // Last, narrower panel (scalar; zero padded to whole vectors).
  if (nfull < nc) {
    const int nr = static_cast<int>(nc - nfull);
    const int NRp = static_cast<int>(rup(nr, W));
    Bf16Pair* d = dst + nfull * depth;
    for (index_t q = 0; q < depth; ++q)
      for (int j = 0; j < NRp; ++j) d[q * NRp + j] = j < nr ? bf16_pair(at(2 * q, nfull + j), at(2 * q + 1, nfull + j)) : 0;
  }
}

// A block as bf16 panels: rows [i0, i0+mc), k [p0, p0+kc), in the layouts of
// the float pack_a with a pair in place of each k ([q][r][u] or [k][r]).
static void pack_a(const GemmArgs<float>& g, index_t i0, index_t mc, index_t p0, index_t kc, index_t kcp,
                   Bf16Pair* __restrict dst) {
  constexpr int MR = Cfg<float, Bf16Pair>::MR;
  const index_t depth = kcp / 2, pairs = cdiv(kc, 2);
  if (!g.trans_a) {
    // Each row is contiguous in k: 2 * KU values round to one chunk of KU pairs.
    const index_t kfull = kc / (2 * KU) * (2 * KU);
    for (index_t ir = 0; ir < mc; ir += MR) {
      const int mr = static_cast<int>(imin(MR, mc - ir));
      const int h = kheight<float, Bf16Pair>(mr);
      Bf16Pair* dp = dst + ir * depth;
      for (int r = 0; r < mr; ++r) {
        const float* s = g.A + (i0 + ir + r) * g.lda + p0;
        if (ir + r + PD < mc) prefetch_row(s + PD * g.lda, kc);
        Bf16Pair* d = dp + r * KU;
        for (index_t k = 0; k < kfull; k += 2 * KU)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k / 2 * h), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s + k)));
        if (kfull < kc) {
          const __mmask16 rest = static_cast<__mmask16>((1u << (kc - kfull)) - 1);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + kfull / 2 * h),
                              (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(rest, s + kfull)));
        }
      }
      for (int r = mr; r < h; ++r)
        for (index_t q = 0; q < depth; q += KU) std::memset(dp + q * h + r * KU, 0, KU * sizeof(Bf16Pair));
    }
  } else {
    // A stored (K,M): rows k and k + 1 of A are columns k, k + 1 of op(A),
    // contiguous in m, zipped into each panel's row of pairs.
    const float* s = g.A + p0 * g.lda + i0;
    for (index_t q = 0; q < pairs; ++q) {
      const float* s0 = s + 2 * q * g.lda;
      const bool partner = 2 * q + 1 < kc;
      if (2 * (q + PD) + 1 < kc) {
        prefetch_row(s0 + 2 * PD * g.lda, mc);
        prefetch_row(s0 + (2 * PD + 1) * g.lda, mc);
      }
      for (index_t ir = 0; ir < mc; ir += MR) {
        const int mr = static_cast<int>(imin(MR, mc - ir));
        const int h = kheight<float, Bf16Pair>(mr);
        const __mmask16 rows = static_cast<__mmask16>((1u << mr) - 1);
        const __m512 r0 = _mm512_maskz_loadu_ps(rows, s0 + ir);
        const __m512 r1 = partner ? _mm512_maskz_loadu_ps(rows, s0 + g.lda + ir) : _mm512_setzero_ps();
        _mm512_mask_storeu_epi32(dst + ir * depth + q * h, static_cast<__mmask16>((1u << h) - 1), zip_pairs(r0, r1));
      }
    }
    for (index_t ir = 0; ir < mc; ir += MR) {
      const int h = kheight<float, Bf16Pair>(imin(MR, mc - ir));
      for (index_t q = pairs; q < depth; ++q) std::memset(dst + ir * depth + q * h, 0, h * sizeof(Bf16Pair));
    }
  }
}
#endif

// --------------------------------------------------------------- drivers ----
// Slow but allocation-free fallback (used only if scratch allocation fails).
template <class T>
static void gemm_block_naive(const GemmArgs<T>& g, index_t m0, index_t m1, index_t n0, index_t n1) {
  for (index_t i = m0; i < m1; ++i) {
    T* c = g.C + i * g.ldc;
    for (index_t j = n0; j < n1; ++j) {
      T s = 0;
      for (index_t p = 0; p < g.K; ++p) {
        const T a = g.trans_a ? g.A[p * g.lda + i] : g.A[i * g.lda + p];
        const T b = g.trans_b ? g.B[j * g.ldb + p] : g.B[p * g.ldb + j];
        s += a * b;
      }
      if (g.accumulate) s += c[j];
      if (g.bias) s += g.bias[j];
      s = activate(s, g.act);
      c[j] = g.gate ? activation_grad<T>(g.gate[i * g.ldc + j], s, g.gate_act) : s;
    }
  }
}

// Balanced K blocking: nkb blocks of kcb (a multiple of KU packed elements) each, the last shorter.
template <class T, class P>
static index_t k_block(index_t K) {
  const index_t nkb = cdiv(K, Cfg<T, P>::KC);
  return rup(cdiv(K, nkb), KU * Cfg<T, P>::KP);
}

// One thread's block of C: rows [m0,m1), columns [n0,n1), all of K.
// Loops: jc (NC) > pc (KC; pack B block, L2) > ic (MC; pack A block, L2)
//        > ir (A micro-panel stays in L1) > jr (B micro-panels stream from L2).
template <class T, class P>
static void gemm_block(const GemmArgs<T>& g, index_t m0, index_t m1, index_t n0, index_t n1) {
  if (m0 >= m1 || n0 >= n1) return;
  constexpr int W = VT<T>::W;
  constexpr int MR = Cfg<T, P>::MR;
  constexpr int NR = Cfg<T, P>::NV * W;
  constexpr int KP = Cfg<T, P>::KP;
  const index_t K = g.K;
  const index_t kcb = k_block<T, P>(K);
  const index_t ncmax = imin(rup(n1 - n0, NR), static_cast<index_t>(Cfg<T, P>::NC));
  const index_t mcmax = imin(rup(m1 - m0, MR), static_cast<index_t>(Cfg<T, P>::MC));
  const std::size_t b_bytes =
      static_cast<std::size_t>(rup(kcb / KP * ncmax * static_cast<index_t>(sizeof(P)), 64));
  const std::size_t a_bytes = static_cast<std::size_t>(kcb / KP * mcmax) * sizeof(P);
  char* base = static_cast<char*>(thread_scratch().get(b_bytes + a_bytes));
  if (base == nullptr) {
    gemm_block_naive(g, m0, m1, n0, n1);
    return;
  }
  P* Bp = reinterpret_cast<P*>(base);
  P* Ap = reinterpret_cast<P*>(base + b_bytes);

  constexpr index_t MC = Cfg<T, P>::MC, NC = Cfg<T, P>::NC;
  for (index_t jc = n0; jc < n1; jc += NC) {
    const index_t nc = imin(NC, n1 - jc);
    for (index_t pc = 0; pc < K; pc += kcb) {
      const index_t kc = imin(kcb, K - pc);
      const index_t kcp = rup(kc, KU * KP);
      const index_t depth = kcp / KP;  // packed elements per panel row
      pack_b(g, jc, nc, pc, kc, kcp, Bp);
      Epi<T> e;
      e.act = g.act;
      e.gate_act = g.gate_act;
      e.load_c = g.accumulate || pc > 0;
      e.last = pc + kc == K;
      for (index_t ic = m0; ic < m1; ic += MC) {
        const index_t mc = imin(MC, m1 - ic);
        pack_a(g, ic, mc, pc, kc, kcp, Ap);
        for (index_t ir = 0; ir < mc; ir += MR) {
          const int mr = static_cast<int>(imin(MR, mc - ir));
          const int h = kheight<T, P>(mr);
          const P* ap = Ap + ir * depth;
          const KFn<T, P> kfull = kpick<T, P>(g.trans_a, h, Cfg<T, P>::NV);
          T* crow = g.C + (ic + ir) * g.ldc + jc;
          const T* gate_row = g.gate ? g.gate + (ic + ir) * g.ldc + jc : nullptr;
          for (index_t jr = 0; jr < nc; jr += NR) {
            const int nr = static_cast<int>(imin(NR, nc - jr));
            e.bias = g.bias ? g.bias + jc + jr : nullptr;
            e.gate = gate_row ? gate_row + jr : nullptr;
            const KFn<T, P> kf = nr == NR ? kfull : kpick<T, P>(g.trans_a, h, static_cast<int>(cdiv(nr, W)));
            kf(depth / KU, ap, Bp + jr * depth, crow + jr, g.ldc, mr, nr, e);
          }
        }
      }
    }
  }
}

// K == 0: C = act((accumulate ? C : 0) + bias).
template <class T>
static void gemm_k0(const GemmArgs<T>& g) {
  for (index_t i = 0; i < g.M; ++i) {
    T* c = g.C + i * g.ldc;
    for (index_t j = 0; j < g.N; ++j) {
      T v = g.accumulate ? c[j] : T(0);
      if (g.bias) v += g.bias[j];
      v = activate(v, g.act);
      c[j] = g.gate ? activation_grad<T>(g.gate[i * g.ldc + j], v, g.gate_act) : v;
    }
  }
}

template <class T, class P>
static void gemm_impl(const GemmArgs<T>& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0) {
    gemm_k0(g);
    return;
  }
  constexpr int W = VT<T>::W;
  constexpr int MR = Cfg<T, P>::MR;
  constexpr int NR = Cfg<T, P>::NV * W;
  const index_t Mp = cdiv(g.M, MR), Np = cdiv(g.N, NR);

  int nt = 1;
  {
    const double flops = 2.0 * static_cast<double>(g.M) * static_cast<double>(g.N) * static_cast<double>(g.K);
    const int want = num_threads();
    // An extra thread per 0.15 MFLOP: a small product gains a thread once its
    // share of the work outlasts the wake-up, so even a narrow last layer splits.
    const double cap = flops / 1.5e5;
    nt = want;
    if (cap < nt) nt = cap < 1.0 ? 1 : static_cast<int>(cap);
    if (nt > Mp * Np) nt = static_cast<int>(Mp * Np);
    if (nt < 1) nt = 1;
  }
  if (nt == 1) {
    gemm_block<T, P>(g, 0, g.M, 0, g.N);
    return;
  }

  // Pick a tm x tn grid (tm * tn == nt) minimising one thread's work: its
  // tile flops plus the packing of its A rows and B columns.
  int tm = 1, tn = nt;
  double best = -1.0;
  for (int a = 1; a <= nt; ++a) {
    if (nt % a != 0) continue;
    const int b = nt / a;
    if (a > Mp || b > Np) continue;
    const double rows = static_cast<double>(imin(cdiv(Mp, a) * MR, g.M));
    const double cols = static_cast<double>(imin(cdiv(Np, b) * NR, g.N));
    const double cost = rows * cols + 4.0 * W * (rows + cols);
    if (best < 0 || cost < best) {
      best = cost;
      tm = a;
      tn = b;
    }
  }
  if (best < 0) {  // e.g. a prime thread count larger than one side
    if (Np >= Mp) { tm = 1; tn = static_cast<int>(imin(nt, Np)); }
    else { tn = 1; tm = static_cast<int>(imin(nt, Mp)); }
    nt = tm * tn;
  }

  parallel_team(nt, [&](index_t t, index_t nteam) {
    // If the pool gave us fewer threads, the members take the rest.
    for (index_t id = t; id < tm * tn; id += nteam) {
      const index_t ti = id / tn, tj = id % tn;
      const index_t m0 = imin(ti * Mp / tm * MR, g.M), m1 = imin((ti + 1) * Mp / tm * MR, g.M);
      const index_t n0 = imin(tj * Np / tn * NR, g.N), n1 = imin((tj + 1) * Np / tn * NR, g.N);
      gemm_block<T, P>(g, m0, m1, n0, n1);
    }
  });
}

}  // namespace

#ifdef __AVX512BF16__
// Float32 products on bf16 panels in "medium" precision; everything else is avx512's.
template <class T>
void gemm(const GemmArgs<T>& g) {
  if constexpr (std::is_same<T, float>::value)
    if (bf16_matmuls()) return gemm_impl<float, Bf16Pair>(g);
  avx512::gemm(g);
}
#else
template <class T>
void gemm(const GemmArgs<T>& g) {
  gemm_impl<T, T>(g);
}
#endif
FASTNN_ISA_KERNEL(gemm)

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
