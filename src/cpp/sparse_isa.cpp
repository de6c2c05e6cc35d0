// Products with a mostly-zero left operand, compiled once per instruction set.
//
// The first layer of an MLP on images sees mostly zeros (most of MNIST's pixels
// are 0), so x @ W and x^T @ dz spend most of their multiply-adds on zeros.
// Here A comes as a BlockSparse: blocks of R = 4 lines with the positions where
// any of the 4 is nonzero. A tile of R lines x NV vectors of C is accumulated
// in registers: per listed position k, NV vectors of B's row k are loaded once
// and used by all R lines (R broadcasts, R * NV fused multiply-adds) -- the
// register reuse of the dense GEMM's microkernel, which a line-at-a-time loop
// lacks (one load of B per multiply-add).
// Blocking lines costs some zeros (a block lists a position where any of its
// lines is nonzero), but lines one at a time, even with B's rows tiled in L1,
// pay more per multiply-add and more to build their form: slower overall.
// In "medium" precision (the avx512_bf16 level) a position is a pair of depths
// (2p, 2p + 1) instead, and a multiply-add is one VDPBF16PS of a line's two
// values, rounded to bf16, by B's two rows, rounded and zipped once per call:
// the nonzeros of an image lie side by side, so a block lists little more than
// half as many pairs as it would positions, and a pair costs what a position does.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>

#include "dispatch.h"
#include "parallel.h"
#include "scratch.h"
#include "simd.h"

namespace fastnn {
namespace FASTNN_ISA_NS {
namespace {

using simd::Bf16Pair;
using simd::VT;
using Relu = Activation<Act::relu>;  // the activation applied in registers
constexpr int R = kSparseBlockLines;

// Vectors of C per tile: R x 6 accumulators of the 32 zmm registers, R x 2 of 16 otherwise.
#if FASTNN_VBYTES == 64
constexpr int kMaxVectors = 6;
#else
constexpr int kMaxVectors = 2;
#endif

// Where a thread's products for a block go: block b's listed positions
// [q0, q1) are multiplied into rows b * R.. of C (row stride n). `whole` (all
// positions) starts from the bias and applies the activation; a part of the
// depth leaves both to the pass that adds up the parts.
template <class T>
struct BlockPart {
  index_t b, q0, q1;
  int lines;
  T* C;
  bool whole;
};

// How a tile multiplies a listed value by a row of B: a float by an FMA of
// its broadcast, or (pairs) a bf16 pair by VDPBF16PS with a row of B's pairs.
template <class T>
struct ValueSteps {
  typedef typename VT<T>::V V;
  typedef V A;
  static constexpr bool pairs = false;
  static inline A broadcast(T a) { return simd::set1(a); }
  static inline V madd(V acc, A a, V b) { return simd::fma(a, b, acc); }
  static inline T madd(T acc, T a, T b) { return acc + a * b; }
};
#ifdef __AVX512BF16__
struct PairSteps {
  typedef VT<float>::V V;
  typedef __m512bh A;
  static constexpr bool pairs = true;
  static inline A broadcast(float a) { return (__m512bh)_mm512_set1_ps(a); }
  static inline V madd(V acc, A a, V b) { return (V)_mm512_dpbf16_ps((__m512)acc, a, (__m512bh)b); }
  // VDPBF16PS on one lane: the high halves' product first (a bf16 widens to
  // float32 by a shift; the products are exact).
  static inline float madd(float acc, float a, float b) {
    const std::uint32_t x = __builtin_bit_cast(std::uint32_t, a), y = __builtin_bit_cast(std::uint32_t, b);
    acc += __builtin_bit_cast(float, x & 0xFFFF0000u) * __builtin_bit_cast(float, y & 0xFFFF0000u);
    return acc + __builtin_bit_cast(float, x << 16) * __builtin_bit_cast(float, y << 16);
  }
};
#endif

// C[b * R + r, c0 : c0 + NV * W] for the lines r < lines of block b; B
// (depth or, with pairs, pairs of depth, row stride n) is what Steps multiplies by.
template <class T, int NV, class Steps>
inline void block_tile(const SparseMatmulArgs<T>& g, const BlockPart<T>& p, const T* B, index_t c0) {
  typedef typename VT<T>::V V;
  constexpr int W = VT<T>::W;
  const BlockSparse<T>& a = g.a;
  V acc[R][NV];
  for (int v = 0; v < NV; ++v) {
    const V init = p.whole && g.bias ? simd::loadu(g.bias + c0 + v * W) : V{};
    for (int r = 0; r < R; ++r) acc[r][v] = init;
  }
  const std::int32_t* index = a.index + p.b * a.capacity;
  const T* value = a.value + p.b * a.capacity * R;
  for (index_t q = p.q0; q < p.q1; ++q) {
    const T* brow = B + index_t(index[q]) * g.n + c0;
    V bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = simd::loadu(brow + v * W);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const typename Steps::A s = Steps::broadcast(value[q * R + r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = Steps::madd(acc[r][v], s, bv[v]);
    }
  }
  const bool relu = p.whole && g.act == Act::relu;
  for (int r = 0; r < p.lines; ++r) {
    T* c = p.C + (p.b * R + r) * g.n + c0;
    for (int v = 0; v < NV; ++v) simd::storeu(c + v * W, relu ? Relu::forward(acc[r][v], T(0)) : acc[r][v]);
  }
}

// The columns past the last whole vector, one scalar at a time.
template <class T, class Steps>
inline void block_tail(const SparseMatmulArgs<T>& g, const BlockPart<T>& p, const T* B, index_t c0) {
  constexpr int W = VT<T>::W;
  const BlockSparse<T>& a = g.a;
  const int width = int(g.n - c0);
  T acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < width; ++j) acc[r][j] = p.whole && g.bias ? g.bias[c0 + j] : T(0);
  const std::int32_t* index = a.index + p.b * a.capacity;
  const T* value = a.value + p.b * a.capacity * R;
  for (index_t q = p.q0; q < p.q1; ++q) {
    const T* brow = B + index_t(index[q]) * g.n + c0;
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < width; ++j) acc[r][j] = Steps::madd(acc[r][j], value[q * R + r], brow[j]);
  }
  const bool relu = p.whole && g.act == Act::relu;
  for (int r = 0; r < p.lines; ++r) {
    T* c = p.C + (p.b * R + r) * g.n + c0;
    for (int j = 0; j < width; ++j) c[j] = relu ? Relu::forward(acc[r][j], T(0)) : acc[r][j];
  }
}

template <class T, class Steps>
void sparse_block(const SparseMatmulArgs<T>& g, const BlockPart<T>& p, const T* B) {
  constexpr int W = VT<T>::W;
  index_t c0 = 0;
  for (; c0 + kMaxVectors * W <= g.n; c0 += kMaxVectors * W) block_tile<T, kMaxVectors, Steps>(g, p, B, c0);
  for (; c0 + 2 * W <= g.n; c0 += 2 * W) block_tile<T, 2, Steps>(g, p, B, c0);
  for (; c0 + W <= g.n; c0 += W) block_tile<T, 1, Steps>(g, p, B, c0);
  if (c0 < g.n) block_tail<T, Steps>(g, p, B, c0);
  if (p.whole && needs_pass(g.act))
    apply_activation(p.C + p.b * R * g.n, p.lines * g.n, g.act);
}

template <class T>
BlockPart<T> whole_block(const SparseMatmulArgs<T>& g, index_t b) {
  const index_t remaining = g.a.lines - b * R;
  return {b, 0, g.a.count[b], remaining < R ? int(remaining) : R, g.C, true};
}

// First of the n ascending positions at or past k.
inline index_t first_at_or_past(const std::int32_t* index, index_t n, index_t k) {
  index_t lo = 0;
  while (n > 0) {
    const index_t half = n / 2;
    if (index[lo + half] < k) {
      lo += half + 1;
      n -= half + 1;
    } else {
      n = half;
    }
  }
  return lo;
}

// A T's bits, and the rule for an infinity or a NaN: every exponent bit set.
// Written with vector types: GCC leaves an `omp simd` reduction scalar when it
// sits inside a parallel region.
template <class T>
struct FloatBits {
  typedef typename std::conditional<sizeof(T) == 4, std::uint32_t, std::uint64_t>::type Bits;
  typedef Bits VBits __attribute__((vector_size(FASTNN_VBYTES)));
  typedef Bits VBits_u __attribute__((vector_size(FASTNN_VBYTES), aligned(sizeof(T)), may_alias));
  static constexpr Bits exponent = sizeof(T) == 4 ? Bits(0x7F800000u) : Bits(0x7FF0000000000000ull);
  static inline VBits special(VBits bits) { return (VBits)((bits & exponent) == exponent); }  // all-ones lanes
  static inline bool special(T x) { return (__builtin_bit_cast(Bits, x) & exponent) == exponent; }
  static inline bool any(VBits lanes) {
    bool any = false;
    for (std::size_t l = 0; l < sizeof(VBits) / sizeof(Bits); ++l) any |= lanes[l] != 0;
    return any;
  }
};

// Whether no element of x [begin, end) is infinite or NaN, on this thread.
template <class T>
bool range_finite(const T* x, index_t begin, index_t end) {
  typedef FloatBits<T> FB;
  constexpr int L = FASTNN_VBYTES / sizeof(T);
  typename FB::VBits special = {};
  index_t i = begin;
  for (; i + L <= end; i += L) special |= FB::special(*reinterpret_cast<const typename FB::VBits_u*>(x + i));
  bool any = FB::any(special);
  for (; i < end; ++i) any |= FB::special(x[i]);
  return !any;
}

// Where thread t of nt starts in the depth: the depth below which a block has
// a t / nt share of its entries, averaged over the blocks, weighted by their
// entries. (An image is not as dense at the top as at the bottom, so an even
// split of the depth would keep one thread longer; an exact search for the
// shares costs a binary search per block at each step.)
template <class T>
index_t depth_share_start(const BlockSparse<T>& a, index_t t, index_t nt) {
  if (t == 0) return 0;
  if (t >= nt) return a.capacity;
  double weighted = 0, entries = 0;
  for (index_t b = 0; b < a.blocks(); ++b) {
    const index_t n = a.count[b];
    weighted += double(n) * (n ? double(a.index[b * a.capacity + n * t / nt]) : 0.0);
    entries += double(n);
  }
  return entries > 0 ? index_t(weighted / entries + 0.5) : a.capacity * t / nt;
}

// The threads split the larger of B and C by rows, so that each core reads or
// writes only its own share of it, about the same share every step: a line
// that one core writes after the other has read it costs a transfer between
// them. In a training step the large one is the weight matrix (B in the
// forward, its gradient C in the backward), which the optimizer's update
// splits the same way (contiguous halves): were both cores to read all of W
// in the forward, the update of W would then wait on those transfers.
// - Splitting C's rows (the weight gradient): each thread takes a run of
//   blocks, the runs cut where the listed entries reach equal shares.
// - Splitting B's rows (the depth; the forward): each thread multiplies every
//   block over its depth range (equal shares of the entries), into C for the
//   blocks it then adds up and into a scratch copy for the others; it then
//   adds the others' copies into its blocks of C, with bias and activation.

#ifdef __AVX512BF16__
// Rows [p0, p1) of B's pairs for PairSteps: row p of B's pairs is rows 2p and
// 2p + 1 of B (the second zero past the depth) rounded to bf16 and zipped, n
// pairs a row. Returns whether those rows of B are all finite, which costs
// little more here than a second pass over them would.
inline bool pack_pair_rows(const SparseMatmulArgs<float>& g, index_t p0, index_t p1, float* pairs) {
  typedef FloatBits<float> FB;
  const index_t n = g.n;
  FB::VBits special = {};
  for (index_t p = p0; p < p1; ++p) {
    const float* r0 = g.B + 2 * p * n;
    const bool partner = 2 * p + 1 < g.a.depth;
    float* d = pairs + p * n;
    index_t j = 0;
    for (; j + 16 <= n; j += 16) {
      const __m512 lo = _mm512_loadu_ps(r0 + j);
      const __m512 hi = partner ? _mm512_loadu_ps(r0 + n + j) : _mm512_setzero_ps();
      special |= FB::special((FB::VBits)lo) | FB::special((FB::VBits)hi);
      _mm512_storeu_si512(d + j, simd::zip_pairs(lo, hi));
    }
    if (j < n) {
      const __mmask16 rest = __mmask16((1u << (n - j)) - 1);
      const __m512 lo = _mm512_maskz_loadu_ps(rest, r0 + j);
      const __m512 hi = partner ? _mm512_maskz_loadu_ps(rest, r0 + n + j) : _mm512_setzero_ps();
      special |= FB::special((FB::VBits)lo) | FB::special((FB::VBits)hi);
      _mm512_mask_storeu_epi32(d + j, rest, simd::zip_pairs(lo, hi));
    }
  }
  return !FB::any(special);
}
#endif

// Rows of B that positions [0, k) of the form span.
template <class T>
inline index_t b_rows(const BlockSparse<T>& a, index_t k) {
  return a.pairs ? std::min(2 * k, a.depth) : k;
}

// Makes what the tiles read for positions [k0, k1) of the form: for PairSteps
// those rows of B's pairs, packed into `pairs`; nothing for ValueSteps, whose
// tiles read B itself. Returns false if g.check_B_finite and B's rows under
// those positions hold an infinity or a NaN.
template <class T, class Steps>
inline bool prepare_b(const SparseMatmulArgs<T>& g, index_t k0, index_t k1, T* pairs) {
#ifdef __AVX512BF16__
  if constexpr (Steps::pairs) return pack_pair_rows(g, k0, k1, pairs) || !g.check_B_finite;
#endif
  return !g.check_B_finite || range_finite(g.B, b_rows(g.a, k0) * g.n, b_rows(g.a, k1) * g.n);
}

template <class T, class Steps>
bool sparse_product(const SparseMatmulArgs<T>& g) {
  const BlockSparse<T>& a = g.a;
  const index_t blocks = a.blocks();
  index_t entries = 0;
  for (index_t b = 0; b < blocks; ++b) entries += a.count[b] + 1;
  const int threads = entries * R * g.n >= kParallelGrain * 8 ? num_threads() : 1;
  const bool split_depth = threads > 1 && a.capacity > a.lines;
  static thread_local ScratchBuf packed;
  // (Taken here: a thread_local named in the team's body would be each member's own.)
  T* const pairs = Steps::pairs ? packed.get_array<T>(a.capacity * g.n) : nullptr;
  if (Steps::pairs && pairs == nullptr) return false;  // out of memory: the dense product takes x
  const T* const B = Steps::pairs ? pairs : g.B;
  if (threads <= 1) {
    if (!prepare_b<T, Steps>(g, 0, a.capacity, pairs)) return false;
    for (index_t b = 0; b < blocks; ++b) sparse_block<T, Steps>(g, whole_block(g, b), B);
    return true;
  }
  std::atomic<bool> special{false};
  if (!split_depth) {
    parallel_team(threads, [&](index_t t, index_t nt) {
      if (!prepare_b<T, Steps>(g, a.capacity * t / nt, a.capacity * (t + 1) / nt, pairs))
        special.store(true, std::memory_order_relaxed);
      // Every member reads all of B (its pairs), and all must know whether it is finite.
      if (Steps::pairs || g.check_B_finite) team_barrier();
      if (special.load(std::memory_order_relaxed)) return;
      const index_t lo = entries * t / nt, hi = entries * (t + 1) / nt;
      index_t cost = 0;
      for (index_t b = 0; b < blocks && cost < hi; ++b) {
        if (cost >= lo) sparse_block<T, Steps>(g, whole_block(g, b), B);
        cost += a.count[b] + 1;
      }
    });
    return !special.load();
  }
  // Thread t writes its parts of the blocks it adds up into C, and its parts
  // of the other blocks into its own scratch copy: it then adds the others'
  // copies into lines of C that only it has written. It reads only its depth
  // range of B, so it prepares only that.
  static thread_local ScratchBuf scratch;
  const index_t size = a.lines * g.n;
  T* const parts = scratch.get_array<T>(threads * size);
  if (parts == nullptr) return false;
  parallel_team(threads, [&](index_t t, index_t nt) {
    const index_t k0 = depth_share_start(a, t, nt), k1 = depth_share_start(a, t + 1, nt);
    if (!prepare_b<T, Steps>(g, k0, k1, pairs)) special.store(true, std::memory_order_relaxed);
    const index_t own0 = blocks * t / nt, own1 = blocks * (t + 1) / nt;
    for (index_t b = 0; b < blocks; ++b) {
      const std::int32_t* index = a.index + b * a.capacity;
      BlockPart<T> p = whole_block(g, b);
      p.q0 = first_at_or_past(index, a.count[b], k0);
      p.q1 = t + 1 == nt ? a.count[b] : p.q0 + first_at_or_past(index + p.q0, a.count[b] - p.q0, k1);
      p.C = b >= own0 && b < own1 ? g.C : parts + t * size;
      p.whole = false;
      sparse_block<T, Steps>(g, p, B);
    }
    team_barrier();
    const index_t r1 = special.load(std::memory_order_relaxed) ? 0 : std::min(own1 * R, a.lines);
    for (index_t r = own0 * R; r < r1; ++r) {
      T* c = g.C + r * g.n;
      for (index_t u = 0; u < nt; ++u) {
        if (u == t) continue;
        const T* part = parts + u * size + r * g.n;
#pragma omp simd
        for (index_t j = 0; j < g.n; ++j) c[j] += part[j];
      }
      if (g.bias) {
#pragma omp simd
        for (index_t j = 0; j < g.n; ++j) c[j] += g.bias[j];
      }
      apply_activation(c, g.n, g.act);
    }
  });
  return !special.load();
}

}  // namespace

template <class T>
bool sparse_matmul(const SparseMatmulArgs<T>& g) {
  if (!g.a.pairs) return sparse_product<T, ValueSteps<T>>(g);
#ifdef __AVX512BF16__
  if constexpr (std::is_same<T, float>::value) return sparse_product<T, PairSteps>(g);
#endif
  return false;  // fill_block_sparse makes no form of pairs here
}
FASTNN_ISA_KERNEL(sparse_matmul)

namespace {

// Entries allowed after `done` of `total` steps when max_entries are allowed in
// all: a dense x is turned down after a few steps, while a sparse one may be
// locally denser than its average by `slack` entries.
inline index_t allowed(index_t max_entries, index_t done, index_t total, index_t slack) {
  return index_t(double(max_entries) * double(done) / double(total)) + slack;
}

// Fills blocks [0, blocks) of x's BlockSparse, the threads taking a contiguous
// share of blocks each: fill(x, rows, cols, out, b0, b1, max_entries, stop)
// fills blocks [b0, b1) and returns false as soon as they need more than
// max_entries (their share of the whole's), or when another thread has set
// stop. Returns whether all fit. The fill functions get their arguments by
// value: through references, every store to out could alias them for the compiler.
template <class T, class Fill>
bool fill_blocks(Fill fill, const T* x, index_t rows, index_t cols, index_t blocks, index_t max_entries,
                 const BlockSparseBuffers<T>& out) {
  const int threads = rows * cols >= kParallelGrain && blocks > 1 ? num_threads() : 1;
  std::atomic<bool> stop{false};
  parallel_for(
      threads,
      [&](index_t t0, index_t t1) {
        const index_t b0 = blocks * t0 / threads, b1 = blocks * t1 / threads;
        const index_t share = index_t(double(max_entries) * double(b1 - b0) / double(blocks));
        if (b0 < b1 && !fill(x, rows, cols, out, b0, b1, share, stop)) stop.store(true, std::memory_order_relaxed);
      },
      threads > 1 ? 1 : 2);
  if (stop.load()) return false;
  index_t entries = 0;
  for (index_t b = 0; b < blocks; ++b) entries += out.count[b];
  return entries <= max_entries;
}

// Appends to a block's list, from entry n, the positions j + l for the set
// bits l of m, with the block's lines' values there (v[r][l]); returns the new
// count. May write up to W entries past it, which must be within the list.
template <class V, class T>
inline index_t append_listed(const V (&v)[R], unsigned m, index_t j, std::int32_t* index, T* value, index_t n) {
  for (; m != 0; m &= m - 1, ++n) {
    const int l = __builtin_ctz(m);
    index[n] = std::int32_t(j + l);
    for (int r = 0; r < R; ++r) value[n * R + r] = v[r][l];
  }
  return n;
}

#if FASTNN_VBYTES == 64
// The same without a branch per position (which positions are listed is close to random):
// each line's listed values are compressed to the front of a register, and a
// 4 x 16 transpose interleaves them into entries of R = 4 values.
static_assert(R == 4, "the transpose below interleaves 4 lines");
inline index_t append_listed(const simd::vf (&v)[R], unsigned m, index_t j, std::int32_t* index, float* value,
                             index_t n) {
  const __mmask16 k = __mmask16(m);
  const __m512i positions = _mm512_add_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(std::int32_t(j)));
  _mm512_storeu_si512(index + n, _mm512_maskz_compress_epi32(k, positions));
  __m512 c[R];
  for (int r = 0; r < R; ++r) c[r] = _mm512_maskz_compress_ps(k, (__m512)v[r]);
  // Per 128-bit lane L, u[e] holds entry 4L + e: (c0, c1, c2, c3) at that entry.
  const __m512d t0 = _mm512_castps_pd(_mm512_unpacklo_ps(c[0], c[1]));
  const __m512d t1 = _mm512_castps_pd(_mm512_unpackhi_ps(c[0], c[1]));
  const __m512d t2 = _mm512_castps_pd(_mm512_unpacklo_ps(c[2], c[3]));
  const __m512d t3 = _mm512_castps_pd(_mm512_unpackhi_ps(c[2], c[3]));
  const __m512 u0 = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2)), u1 = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
  const __m512 u2 = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3)), u3 = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  // Transposing the 128-bit lanes puts the entries in order.
  const __m512 w0 = _mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512 w1 = _mm512_shuffle_f32x4(u0, u1, _MM_SHUFFLE(3, 2, 3, 2));
  const __m512 w2 = _mm512_shuffle_f32x4(u2, u3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512 w3 = _mm512_shuffle_f32x4(u2, u3, _MM_SHUFFLE(3, 2, 3, 2));
  float* out = value + n * R;
  _mm512_storeu_ps(out, _mm512_shuffle_f32x4(w0, w2, _MM_SHUFFLE(2, 0, 2, 0)));
  _mm512_storeu_ps(out + 16, _mm512_shuffle_f32x4(w0, w2, _MM_SHUFFLE(3, 1, 3, 1)));
  _mm512_storeu_ps(out + 32, _mm512_shuffle_f32x4(w1, w3, _MM_SHUFFLE(2, 0, 2, 0)));
  _mm512_storeu_ps(out + 48, _mm512_shuffle_f32x4(w1, w3, _MM_SHUFFLE(3, 1, 3, 1)));
  return n + __builtin_popcount(m);
}
#endif

// What a form lists at a position of a line of x: one value (Values), or the
// values at two depths rounded to bf16 side by side (Pairs). `chunk` depths of
// a line load as one vector of positions; `at` gives one position (the tails).
template <class T>
struct Values {
  typedef typename VT<T>::V V;
  static constexpr int per = 1;  // depths per position
  static constexpr int chunk = VT<T>::W;
  static inline V load(const T* line, index_t j) { return simd::loadu(line + j); }
  static inline unsigned nonzero(V v) { return simd::nonzero_mask(v); }
  static inline T at(const T* line, index_t p, index_t) { return line[p]; }
  static inline bool nonzero(T v) { return v != T(0); }  // true for NaN, which must reach C
  // Position i of column block b (x's columns b * R ...), its R values, zero
  // past x's columns; returns whether the position is to be listed (any is nonzero).
  static inline bool column_values(const T* x, index_t, index_t cols, index_t i, index_t b, T* v) {
    const T* xi = x + i * cols + b * R;
    if (b * R + R <= cols)
      std::memcpy(v, xi, R * sizeof(T));
    else
      for (int r = 0; r < R; ++r) v[r] = b * R + r < cols ? xi[r] : T(0);
    return true;  // the scan found a nonzero there
  }
};
#ifdef __AVX512BF16__
struct Pairs {
  typedef VT<float>::V V;
  static constexpr int per = 2;
  static constexpr int chunk = 2 * VT<float>::W;
  static inline V load(const float* line, index_t j) {
    return (V)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(line + j + 16), _mm512_loadu_ps(line + j));
  }
  // A pair is listed unless both its values are zeros (of either sign).
  static inline unsigned nonzero(V v) { return _mm512_test_epi32_mask((__m512i)v, _mm512_set1_epi32(0x7FFF7FFF)); }
  static inline float at(const float* line, index_t p, index_t depth) {
    return __builtin_bit_cast(float, simd::bf16_pair(line[2 * p], 2 * p + 1 < depth ? line[2 * p + 1] : 0.0f));
  }
  static inline bool nonzero(float v) { return (__builtin_bit_cast(std::uint32_t, v) & 0x7FFF7FFFu) != 0; }
  // (The scan found a nonzero float32 there, which may round to zero: a denormal.)
  static inline bool column_values(const float* x, index_t rows, index_t cols, index_t p, index_t b, float* v) {
    const float* x0 = x + 2 * p * cols + b * R;
    __m128i pairs;
    if (b * R + R <= cols && 2 * p + 1 < rows) {
      // Both rows' 4 values rounded in one register, then interleaved: (x0[r], x1[r]) per r.
      const __m128i both = (__m128i)_mm_cvtne2ps_pbh(_mm_loadu_ps(x0 + cols), _mm_loadu_ps(x0));
      pairs = _mm_unpacklo_epi16(both, _mm_srli_si128(both, 8));
    } else {
      alignas(16) Bf16Pair each[R];
      for (int r = 0; r < R; ++r) {
        const bool inside = b * R + r < cols;
        each[r] = simd::bf16_pair(inside ? x0[r] : 0.0f, inside && 2 * p + 1 < rows ? x0[cols + r] : 0.0f);
      }
      pairs = _mm_load_si128(reinterpret_cast<const __m128i*>(each));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(v), pairs);
    return !_mm_testz_si128(pairs, _mm_set1_epi32(0x7FFF7FFF));
  }
};
#endif

// Block b of x's rows: the positions where any of its rows is nonzero.
template <class T, class Form>
bool fill_row_blocks(const T* x, index_t rows, index_t cols, BlockSparseBuffers<T> out, index_t b0, index_t b1,
                     index_t share, const std::atomic<bool>& stop) {
  const index_t capacity = sparse_positions(cols, Form::per == 2);
  index_t entries = 0;
  for (index_t b = b0; b < b1; ++b) {
    const T* xr[R];
    const int lines = rows - b * R < R ? int(rows - b * R) : R;
    // Rows past the end read row 0 of the block, and their values are zeroed below.
    for (int r = 0; r < R; ++r) xr[r] = x + (b * R + (r < lines ? r : 0)) * cols;
    std::int32_t* index = out.index + b * capacity;
    T* value = out.value + b * capacity * R;
    index_t n = 0;
    index_t j = 0;
    for (; j + Form::chunk <= cols; j += Form::chunk) {
      typename Form::V v[R];
      unsigned m = 0;
      for (int r = 0; r < R; ++r) m |= Form::nonzero(v[r] = Form::load(xr[r], j));
      // Most vectors of an image are all zeros: one test skips them.
      if (m != 0) n = append_listed(v, m, j / Form::per, index, value, n);
    }
    for (index_t p = j / Form::per; p < capacity; ++p) {
      T v[R];
      bool any = false;
      for (int r = 0; r < R; ++r) any |= Form::nonzero(v[r] = Form::at(xr[r], p, cols));
      if (any) {
        index[n] = std::int32_t(p);
        for (int r = 0; r < R; ++r) value[n * R + r] = v[r];
        ++n;
      }
    }
    for (index_t q = 0; q < n; ++q)
      for (int r = lines; r < R; ++r) value[q * R + r] = T(0);
    out.count[b] = n;
    entries += n;
    if (entries > allowed(share, b + 1 - b0, b1 - b0, 2 * capacity) || stop.load(std::memory_order_relaxed))
      return false;
  }
  return true;
}

// Block b of x's columns (columns b * R ... b * R + R - 1): the positions
// (rows, or pairs of rows) where any of them is nonzero. x is row-major, so 64
// rows at a time are scanned into one bit per (block, row), branch-free
// (whether a block is nonzero is too random to predict); then each block's
// positions are listed from its bits, in ascending order.
template <class T, class Form>
bool fill_column_blocks(const T* x, index_t rows, index_t cols, BlockSparseBuffers<T> out, index_t b0, index_t b1,
                        index_t share, const std::atomic<bool>& stop) {
  constexpr int W = VT<T>::W;
  const index_t capacity = sparse_positions(rows, Form::per == 2);
  const index_t k0 = b0 * R, k1 = b1 * R < cols ? b1 * R : cols;
  // Bit i - i0 of nonzero[b - b0]: block b of row i has a nonzero.
  static thread_local ScratchBuf nonzero_bits;
  std::uint64_t* const nonzero = nonzero_bits.get_array<std::uint64_t>(b1 - b0);
  if (nonzero == nullptr) return false;  // out of memory: the dense product takes x
  for (index_t b = b0; b < b1; ++b) out.count[b] = 0;
  index_t entries = 0;
  for (index_t i0 = 0; i0 < rows; i0 += 64) {
    const index_t i1 = i0 + 64 < rows ? i0 + 64 : rows;
    index_t k = k0;
    if (W % R == 0) {
      // W / R blocks at a time down the group's rows: one mask of nonzero
      // lanes per row, then each block's bits from its lanes in all 64 masks.
      for (; k + W <= k1; k += W) {
        std::uint16_t masks[64] = {};
        for (index_t i = i0; i < i1; ++i)
          masks[i - i0] = std::uint16_t(simd::nonzero_mask(simd::loadu(x + i * cols + k)));
        for (int s = 0; s < W / R; ++s)
          nonzero[(k - k0) / R + s] = simd::any_bits_of(masks, std::uint16_t(((1u << R) - 1) << (s * R)));
      }
    }
    std::fill(nonzero + (k - k0) / R, nonzero + (b1 - b0), std::uint64_t(0));
    for (index_t i = i0; i < i1; ++i)
      for (index_t j = k; j < k1; ++j)  // true for NaN, which must reach C
        nonzero[(j - k0) / R] |= x[i * cols + j] != T(0) ? std::uint64_t(1) << (i - i0) : 0;
    // A pair of rows (i0 is even) is listed at its first row's bit.
    if (Form::per == 2)
      for (index_t b = 0; b < b1 - b0; ++b) nonzero[b] = (nonzero[b] | nonzero[b] >> 1) & 0x5555555555555555ull;
    // Counted before listing, so that a dense x (a hidden layer's activations)
    // is turned down without copying its values.
    for (index_t b = 0; b < b1 - b0; ++b) entries += __builtin_popcountll(nonzero[b]);
    if (entries > allowed(share, i1, rows, 2 * (b1 - b0)) || stop.load(std::memory_order_relaxed)) return false;
    for (index_t b = b0; b < b1; ++b) {
      index_t q = out.count[b];
      for (std::uint64_t m = nonzero[b - b0]; m != 0; m &= m - 1) {
        const index_t p = (i0 + __builtin_ctzll(m)) / Form::per;
        out.index[b * capacity + q] = std::int32_t(p);
        q += Form::column_values(x, rows, cols, p, b, out.value + (b * capacity + q) * R);
      }
      out.count[b] = q;
    }
  }
  return true;
}

template <class T, class Form>
bool fill_form(const BlockSparseFillArgs<T>& a) {
  if (a.by_columns)
    return fill_blocks(fill_column_blocks<T, Form>, a.x, a.rows, a.cols, (a.cols + R - 1) / R, a.max_entries, a.out);
  return fill_blocks(fill_row_blocks<T, Form>, a.x, a.rows, a.cols, (a.rows + R - 1) / R, a.max_entries, a.out);
}

}  // namespace

template <class T>
bool fill_block_sparse(const BlockSparseFillArgs<T>& a) {
  if (!a.pairs) return fill_form<T, Values<T>>(a);
#ifdef __AVX512BF16__
  if constexpr (std::is_same<T, float>::value) return fill_form<T, Pairs>(a);
#endif
  return false;  // no bf16 here: the dense product takes x
}
FASTNN_ISA_KERNEL(fill_block_sparse)

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
