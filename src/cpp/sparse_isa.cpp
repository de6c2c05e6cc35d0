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
#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "parallel.h"
#include "simd.h"

namespace fastnn {
namespace FASTNN_ISA_NS {
namespace {

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

// C[b * R + r, c0 : c0 + NV * W] for the lines r < lines of block b.
template <class T, int NV>
inline void block_tile(const SparseMatmulArgs<T>& g, const BlockPart<T>& p, index_t c0) {
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
    const T* brow = g.B + index_t(index[q]) * g.n + c0;
    V bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = simd::loadu(brow + v * W);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const V s = simd::set1(value[q * R + r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = simd::fma(s, bv[v], acc[r][v]);
    }
  }
  const bool relu = p.whole && g.act == Act::relu;
  for (int r = 0; r < p.lines; ++r) {
    T* c = p.C + (p.b * R + r) * g.n + c0;
    for (int v = 0; v < NV; ++v) simd::storeu(c + v * W, relu ? Relu::forward(acc[r][v], T(0)) : acc[r][v]);
  }
}

// The columns past the last whole vector, one scalar at a time.
template <class T>
inline void block_tail(const SparseMatmulArgs<T>& g, const BlockPart<T>& p, index_t c0) {
  constexpr int W = VT<T>::W;
  const BlockSparse<T>& a = g.a;
  const int width = int(g.n - c0);
  T acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < width; ++j) acc[r][j] = p.whole && g.bias ? g.bias[c0 + j] : T(0);
  const std::int32_t* index = a.index + p.b * a.capacity;
  const T* value = a.value + p.b * a.capacity * R;
  for (index_t q = p.q0; q < p.q1; ++q) {
    const T* brow = g.B + index_t(index[q]) * g.n + c0;
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < width; ++j) acc[r][j] += value[q * R + r] * brow[j];
  }
  const bool relu = p.whole && g.act == Act::relu;
  for (int r = 0; r < p.lines; ++r) {
    T* c = p.C + (p.b * R + r) * g.n + c0;
    for (int j = 0; j < width; ++j) c[j] = relu ? Relu::forward(acc[r][j], T(0)) : acc[r][j];
  }
}

template <class T>
void sparse_block(const SparseMatmulArgs<T>& g, const BlockPart<T>& p) {
  constexpr int W = VT<T>::W;
  index_t c0 = 0;
  for (; c0 + kMaxVectors * W <= g.n; c0 += kMaxVectors * W) block_tile<T, kMaxVectors>(g, p, c0);
  for (; c0 + 2 * W <= g.n; c0 += 2 * W) block_tile<T, 2>(g, p, c0);
  for (; c0 + W <= g.n; c0 += W) block_tile<T, 1>(g, p, c0);
  if (c0 < g.n) block_tail(g, p, c0);
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

// Whether no element of x [begin, end) is infinite or NaN, on this thread.
template <class T>
bool range_finite(const T* x, index_t begin, index_t end) {
  typedef typename std::conditional<sizeof(T) == 4, std::uint32_t, std::uint64_t>::type Bits;
  constexpr Bits exponent = sizeof(T) == 4 ? Bits(0x7F800000u) : Bits(0x7FF0000000000000ull);
  // Written with vector types: GCC leaves an `omp simd` reduction scalar when
  // it sits inside a parallel region.
  typedef Bits VBits __attribute__((vector_size(FASTNN_VBYTES)));
  typedef Bits VBits_u __attribute__((vector_size(FASTNN_VBYTES), aligned(sizeof(T)), may_alias));
  constexpr int L = FASTNN_VBYTES / sizeof(T);
  VBits special = {};  // an infinity or a NaN has every exponent bit set
  index_t i = begin;
  for (; i + L <= end; i += L) {
    const VBits bits = *reinterpret_cast<const VBits_u*>(x + i);
    special |= (VBits)((bits & exponent) == exponent);
  }
  bool any = false;
  for (int l = 0; l < L; ++l) any |= special[l] != 0;
  for (; i < end; ++i) any |= (__builtin_bit_cast(Bits, x[i]) & exponent) == exponent;
  return !any;
}

template <class T>
bool all_finite_impl(const T* x, index_t n) {
  const double chunks_with_special = parallel_sum(n, [=](index_t begin, index_t end) {
    return range_finite(x, begin, end) ? 0.0 : 1.0;
  });
  return chunks_with_special == 0.0;
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
}  // namespace

template <class T>
bool sparse_matmul(const SparseMatmulArgs<T>& g) {
  const BlockSparse<T>& a = g.a;
  const index_t blocks = a.blocks();
  index_t entries = 0;
  for (index_t b = 0; b < blocks; ++b) entries += a.count[b] + 1;
  const int threads = entries * R * g.n >= kParallelGrain * 8 ? num_threads() : 1;
  const bool split_depth = threads > 1 && a.capacity > a.lines;
  // The depth split checks B by shares inside its parallel region.
  if (g.check_B_finite && !split_depth && !all_finite_impl(g.B, a.capacity * g.n)) return false;
  if (threads <= 1) {
    for (index_t b = 0; b < blocks; ++b) sparse_block(g, whole_block(g, b));
    return true;
  }
  if (!split_depth) {
    parallel_team(threads, [&](index_t t, index_t nt) {
      const index_t lo = entries * t / nt, hi = entries * (t + 1) / nt;
      index_t cost = 0;
      for (index_t b = 0; b < blocks && cost < hi; ++b) {
        if (cost >= lo) sparse_block(g, whole_block(g, b));
        cost += a.count[b] + 1;
      }
    });
    return true;
  }
  // Thread t writes its parts of the blocks it adds up into C, and its parts
  // of the other blocks into its own scratch copy: it then adds the others'
  // copies into lines of C that only it has written.
  static thread_local std::vector<T> scratch;
  const index_t size = a.lines * g.n;
  if (index_t(scratch.size()) < threads * size) scratch.resize(threads * size);
  T* const parts = scratch.data();
  std::atomic<bool> special{false};
  parallel_team(threads, [&](index_t t, index_t nt) {
    const index_t k0 = depth_share_start(a, t, nt), k1 = depth_share_start(a, t + 1, nt);
    if (g.check_B_finite && !range_finite(g.B, k0 * g.n, k1 * g.n)) special.store(true, std::memory_order_relaxed);
    const index_t own0 = blocks * t / nt, own1 = blocks * (t + 1) / nt;
    for (index_t b = 0; b < blocks; ++b) {
      const std::int32_t* index = a.index + b * a.capacity;
      BlockPart<T> p = whole_block(g, b);
      p.q0 = first_at_or_past(index, a.count[b], k0);
      p.q1 = t + 1 == nt ? a.count[b] : p.q0 + first_at_or_past(index + p.q0, a.count[b] - p.q0, k1);
      p.C = b >= own0 && b < own1 ? g.C : parts + t * size;
      p.whole = false;
      sparse_block(g, p);
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

// Block b of x's rows: the columns where any of its rows is nonzero.
template <class T>
bool fill_row_blocks(const T* x, index_t rows, index_t cols, BlockSparseBuffers<T> out, index_t b0, index_t b1,
                     index_t share, const std::atomic<bool>& stop) {
  constexpr int W = VT<T>::W;
  index_t entries = 0;
  for (index_t b = b0; b < b1; ++b) {
    const T* xr[R];
    const int lines = rows - b * R < R ? int(rows - b * R) : R;
    // Rows past the end read row 0 of the block, and their values are zeroed below.
    for (int r = 0; r < R; ++r) xr[r] = x + (b * R + (r < lines ? r : 0)) * cols;
    std::int32_t* index = out.index + b * cols;
    T* value = out.value + b * cols * R;
    index_t n = 0;
    index_t j = 0;
    for (; j + W <= cols; j += W) {
      typename VT<T>::V v[R];
      unsigned m = 0;
      for (int r = 0; r < R; ++r) m |= simd::nonzero_mask(v[r] = simd::loadu(xr[r] + j));
      // Most vectors of an image are all zeros: one test skips them.
      if (m != 0) n = append_listed(v, m, j, index, value, n);
    }
    for (; j < cols; ++j) {
      bool any = false;
      for (int r = 0; r < R; ++r) any |= xr[r][j] != T(0);  // true for NaN, which must reach C
      if (any) {
        index[n] = std::int32_t(j);
        for (int r = 0; r < R; ++r) value[n * R + r] = xr[r][j];
        ++n;
      }
    }
    for (index_t q = 0; q < n; ++q)
      for (int r = lines; r < R; ++r) value[q * R + r] = T(0);
    out.count[b] = n;
    entries += n;
    if (entries > allowed(share, b + 1 - b0, b1 - b0, 2 * cols) || stop.load(std::memory_order_relaxed))
      return false;
  }
  return true;
}

// Block b of x's columns (columns b * R ... b * R + R - 1): the rows where any
// of them is nonzero. x is row-major, so 64 rows at a time are scanned into one
// bit per (block, row), branch-free (whether a block is nonzero is too random to
// predict); then each block's rows are listed from its bits, in ascending order.
template <class T>
bool fill_column_blocks(const T* x, index_t rows, index_t cols, BlockSparseBuffers<T> out, index_t b0, index_t b1,
                        index_t share, const std::atomic<bool>& stop) {
  constexpr int W = VT<T>::W;
  const index_t k0 = b0 * R, k1 = b1 * R < cols ? b1 * R : cols;
  // Bit i - i0 of nonzero[b - b0]: block b of row i has a nonzero.
  std::vector<std::uint64_t> nonzero(b1 - b0);
  for (index_t b = b0; b < b1; ++b) out.count[b] = 0;
  index_t entries = 0;
  for (index_t i0 = 0; i0 < rows; i0 += 64) {
    const index_t i1 = i0 + 64 < rows ? i0 + 64 : rows;
    index_t k = k0;
    if (W % R == 0) {
      // W / R blocks at a time down the group's rows, their bits in registers.
      for (; k + W <= k1; k += W) {
        std::uint64_t bits[W / R] = {};
        for (index_t i = i0; i < i1; ++i) {
          const unsigned m = simd::nonzero_mask(simd::loadu(x + i * cols + k));
          for (int s = 0; s < W / R; ++s)
            bits[s] |= std::uint64_t(((m >> (s * R)) & ((1u << R) - 1)) != 0) << (i - i0);
        }
        for (int s = 0; s < W / R; ++s) nonzero[(k - k0) / R + s] = bits[s];
      }
    }
    std::fill(nonzero.begin() + (k - k0) / R, nonzero.end(), 0);
    for (index_t i = i0; i < i1; ++i)
      for (index_t j = k; j < k1; ++j)  // true for NaN, which must reach C
        nonzero[(j - k0) / R] |= x[i * cols + j] != T(0) ? std::uint64_t(1) << (i - i0) : 0;
    // Counted before listing, so that a dense x (a hidden layer's activations)
    // is turned down without copying its values.
    for (const std::uint64_t m : nonzero) entries += __builtin_popcountll(m);
    if (entries > allowed(share, i1, rows, 2 * (b1 - b0)) || stop.load(std::memory_order_relaxed)) return false;
    for (index_t b = b0; b < b1; ++b) {
      index_t q = out.count[b];
      for (std::uint64_t m = nonzero[b - b0]; m != 0; m &= m - 1, ++q) {
        const index_t i = i0 + __builtin_ctzll(m);
        const T* xi = x + i * cols + b * R;
        T* v = out.value + (b * rows + q) * R;
        out.index[b * rows + q] = std::int32_t(i);
        if (b * R + R <= cols)
          std::memcpy(v, xi, R * sizeof(T));
        else
          for (int r = 0; r < R; ++r) v[r] = b * R + r < cols ? xi[r] : T(0);
      }
      out.count[b] = q;
    }
  }
  return true;
}

}  // namespace

template <class T>
bool fill_block_sparse(const BlockSparseFillArgs<T>& a) {
  if (a.by_columns)
    return fill_blocks(fill_column_blocks<T>, a.x, a.rows, a.cols, (a.cols + R - 1) / R, a.max_entries, a.out);
  return fill_blocks(fill_row_blocks<T>, a.x, a.rows, a.cols, (a.rows + R - 1) / R, a.max_entries, a.out);
}
FASTNN_ISA_KERNEL(fill_block_sparse)

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
