// A linear layer y = act(x @ W + b) and its backward pass, built on the
// dispatched GEMM. The forward's bias and activation happen in the GEMM's store;
// the backward computes dz = dy * act'(y) and db in one pass, then two GEMMs,
// the dx one optionally through the previous layer's activation.
// When x is mostly zeros (the pixels of an image) x @ W and x^T @ dz skip them.
#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "kernels.h"
#include "parallel.h"

namespace fastnn {

namespace {

using FASTNN_ISA_NS::Activation;
using FASTNN_ISA_NS::with_fusable;

// dz (rows, out) = dy * act'(y) unless act is none (then dz is not written and
// may be null); db (out,) = column sums of dz. Threads split the columns, so
// each db entry is summed by one thread in row order. The activation is a
// template argument: a switch inside the loop would keep it from vectorising.
template <class T, Act A>
void activation_grad_and_bias(const T* dy, const T* y, T* dz, T* db, index_t rows, index_t out) {
  const index_t min_columns = rows * out >= kParallelGrain ? 64 : out + 1;
  parallel_for(
      out,
      [=](index_t c0, index_t c1) {
        if (db)
          for (index_t c = c0; c < c1; ++c) db[c] = T(0);
        for (index_t r = 0; r < rows; ++r) {
          const T* grad = dy + r * out;
          if (A != Act::none) {
            const T* yr = y + r * out;
            T* dzr = dz + r * out;
#pragma omp simd
            for (index_t c = c0; c < c1; ++c) dzr[c] = Activation<A>::grad(yr[c], grad[c], T(0));
            grad = dzr;
          }
          if (db) {
#pragma omp simd
            for (index_t c = c0; c < c1; ++c) db[c] += grad[c];
          }
        }
      },
      min_columns);
}

template <class T>
void activation_grad_and_bias(const T* dy, const T* y, T* dz, T* db, index_t rows, index_t out, Act act) {
  with_fusable(act, [&](auto a) { activation_grad_and_bias<T, decltype(a)::value>(dy, y, dz, db, rows, out); });
}

// x's block-sparse form is used when at most this share of its blocks'
// positions are listed: the sparse product's time grows with that share, and
// the limit sits below the share where it would meet the GEMM's, keeping a
// margin for building the form, which a rejected x also pays for until the
// check turns it down.
constexpr double kSparseMaxDensity = 0.5;

// x's block-sparse form, in grow-only per-thread buffers: no allocation per call
// after warm-up, nothing shared between concurrent calls.
template <class T>
struct SparseInput {
  std::vector<index_t> count;
  std::vector<std::int32_t> index;
  std::vector<T> value;

  static SparseInput& for_this_thread() {
    static thread_local SparseInput buffers;
    return buffers;
  }

  bool convert(const T* x, index_t rows, index_t cols, bool by_columns, bool pairs, BlockSparse<T>& a) {
    if (std::max(rows, cols) > std::numeric_limits<std::int32_t>::max()) return false;
    a.lines = by_columns ? cols : rows;
    a.depth = by_columns ? rows : cols;
    a.pairs = pairs;
    a.capacity = sparse_positions(a.depth, pairs);
    const index_t blocks = a.blocks();
    // Never empty: pointer arithmetic on the null data() of an empty vector is undefined.
    const index_t entries = std::max<index_t>(blocks * a.capacity, 1);
    count.resize(std::max<index_t>(blocks, 1));
    if (index_t(index.size()) < entries) index.resize(entries);
    if (index_t(value.size()) < entries * kSparseBlockLines) value.resize(entries * kSparseBlockLines);
    const index_t max_entries = index_t(kSparseMaxDensity * double(blocks) * double(a.capacity));
    const bool sparse = fill_block_sparse(BlockSparseFillArgs<T>{
        x, rows, cols, by_columns, pairs, max_entries, {count.data(), index.data(), value.data()}});
    a.count = count.data();
    a.index = index.data();
    a.value = value.data();
    return sparse;
  }
};

// C (M, N) = act(op(A) @ op(B) + bias) * gate_act'(gate) through the
// dispatched GEMM, for contiguous A, B, C and gate (M, N); op(A) is A (M, K), or
// A stored (K, M) with trans_a; op(B) is B (K, N), or B stored (N, K) with trans_b.
template <class T>
void product(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const T* A, const T* B, T* C,
             const T* bias = nullptr, Act act = Act::none, const T* gate = nullptr, Act gate_act = Act::none) {
  GemmArgs<T> g;
  g.trans_a = trans_a; g.trans_b = trans_b;
  g.M = M; g.N = N; g.K = K;
  g.A = A; g.lda = trans_a ? M : K;
  g.B = B; g.ldb = trans_b ? K : N;
  g.C = C; g.ldc = N;
  g.bias = bias; g.act = act;
  if (gate_act != Act::none) { g.gate = gate; g.gate_act = gate_act; }
  gemm(g);
}

// Whether x's block-sparse form is of bf16 pairs: float32 products in bf16 take it.
template <class T>
bool sparse_pairs() {
  return std::is_same<T, float>::value && bf16_matmuls();
}

}  // namespace

template <class T>
bool block_sparse_form(const T* x, index_t rows, index_t cols, bool by_columns, bool pairs, BlockSparse<T>& a) {
  return SparseInput<T>::for_this_thread().convert(x, rows, cols, by_columns, pairs, a);
}

template <class T>
void linear_forward(const T* x, const T* W, const T* b, T* y, index_t rows, index_t in, index_t out, Act act,
                    bool sparse) {
  SparseMatmulArgs<T> s;
  s.B = W; s.bias = b; s.C = y; s.n = out; s.act = act; s.check_B_finite = true;
  if (sparse && block_sparse_form(x, rows, in, false, sparse_pairs<T>(), s.a) && sparse_matmul(s)) return;
  product(false, false, rows, out, in, x, W, y, b, act);
}

template <class T>
void linear_backward(const T* x, const T* W, const T* dy, const T* y, T* dz, T* dx, T* dW, T* db,
                     index_t rows, index_t in, index_t out, Act act, Act x_act, bool sparse) {
  if (act != Act::none || db) activation_grad_and_bias(dy, y, dz, db, rows, out, act);
  const T* grad = act == Act::none ? dy : dz;
  // dW (in, out) = x^T (in, rows) @ grad (rows, out)
  SparseMatmulArgs<T> s;
  s.B = grad; s.C = dW; s.n = out; s.check_B_finite = true;
  if (!(sparse && block_sparse_form(x, rows, in, true, sparse_pairs<T>(), s.a) && sparse_matmul(s)))
    product(true, false, in, out, rows, x, grad, dW);
  // dx (rows, in) = grad (rows, out) @ W^T (out, in), times x_act'(x)
  if (dx) product(false, true, rows, in, out, grad, W, dx, static_cast<const T*>(nullptr), Act::none, x, x_act);
}

void gather_rows(const char* x, const std::int64_t* index, char* out, index_t count, index_t row_bytes) {
  parallel_for(
      count,
      [&](index_t begin, index_t end) {
        for (index_t i = begin; i < end; ++i) std::memcpy(out + i * row_bytes, x + index[i] * row_bytes, row_bytes);
      },
      // Rows are copied whole, so the grain is in rows: about 256 KiB per thread.
      row_bytes > 0 ? (index_t(1) << 18) / row_bytes + 1 : kParallelGrain);
}

// Only the first cache lines of each row are asked for: that takes the memory
// latency of reaching a random row off the next gather, and the hardware
// prefetcher streams the rest of the row once the gather reads its start.
constexpr index_t kPrefetchBytes = 512;

void prefetch_rows(const char* x, const std::int64_t* index, index_t count, index_t row_bytes) {
  const index_t bytes = std::min(kPrefetchBytes, row_bytes);
  for (index_t i = 0; i < count; ++i)
    for (index_t b = 0; b < bytes; b += 64) __builtin_prefetch(x + index[i] * row_bytes + b, 0, 2);
}

#define FASTNN_INSTANTIATE(T)                                                                        \
  template bool block_sparse_form<T>(const T*, index_t, index_t, bool, bool, BlockSparse<T>&);       \
  template void linear_forward<T>(const T*, const T*, const T*, T*, index_t, index_t, index_t, Act,  \
                                  bool);                                                             \
  template void linear_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*, T*, index_t,  \
                                   index_t, index_t, Act, Act, bool);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)

}  // namespace fastnn
