// Softmax, log-softmax and fused softmax-cross-entropy, one pass per row.
// Compiled once per instruction set (see FASTNN_ISA_SOURCES); the row loops
// are written for the auto-vectorizer with vexp() from vector_math.h.
#include "dispatch.h"
#include "parallel.h"
#include "simd.h"
#include "vector_math.h"

namespace fastnn {
namespace FASTNN_ISA_NS {
namespace {

// Rows per thread below which starting threads costs more than the work.
inline index_t row_grain(index_t cols) { return kParallelGrain / (cols > 0 ? cols : 1) + 1; }

template <class T>
inline T row_max(const T* x, index_t n) {
  // A NaN is skipped here but still reaches every output through the exp-sum.
  T m = x[0];
#pragma omp simd reduction(max : m)
  for (index_t j = 1; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// e[j] = exp(x[j] - shift); returns the sum of e.
template <class T>
inline T exp_shifted(const T* x, T shift, T* e, index_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (index_t j = 0; j < n; ++j) {
    const T v = vexp(x[j] - shift);
    e[j] = v;
    sum += v;
  }
  return sum;
}

// Rows shorter than this (C = 10 classes) are too short to vectorise one at a
// time: a vector loop over 10 elements is mostly set-up and tail. They are
// processed a block of rows at a time instead, with the exp and the log each
// running as one flat vector loop over the block. Longer rows vectorise on
// their own and take one fused exp-and-sum pass per row.
constexpr index_t kShortRow = 64;
constexpr index_t kShortBlock = 1024;  // elements per block: the block stays in L1

// Per-row results of a block of short rows.
template <class T>
struct ShortRows {
  T max[kShortBlock];
  T sum[kShortBlock];      // sum of exp(x - max)
  T log_sum[kShortBlock];  // filled by take_logs()
  index_t rows;

  // e (rows, cols) = exp(x - row max) for rows*cols <= kShortBlock; e may be x.
  void exp_rows(const T* x, T* e, index_t n_rows, index_t cols) {
    rows = n_rows;
    for (index_t i = 0; i < rows; ++i) {
      const T* xi = x + i * cols;
      T m = xi[0];
      for (index_t j = 1; j < cols; ++j) m = xi[j] > m ? xi[j] : m;
      max[i] = m;  // a NaN is skipped here but still reaches the row's sum
      for (index_t j = 0; j < cols; ++j) e[i * cols + j] = xi[j] - m;
    }
    const index_t n = rows * cols;
#pragma omp simd
    for (index_t k = 0; k < n; ++k) e[k] = vexp(e[k]);
    for (index_t i = 0; i < rows; ++i) {
      T s = 0;
      for (index_t j = 0; j < cols; ++j) s += e[i * cols + j];
      sum[i] = s;
    }
  }

  void take_logs() {
#pragma omp simd
    for (index_t i = 0; i < rows; ++i) log_sum[i] = vlog(sum[i]);
  }
};

// Calls body(first_row, n_rows) for consecutive blocks of at most kShortBlock elements.
template <class Body>
inline void for_each_short_block(index_t first, index_t last, index_t cols, Body body) {
  const index_t block_rows = kShortBlock / (cols > 0 ? cols : 1);
  for (index_t i = first; i < last; i += block_rows) body(i, (last - i < block_rows) ? last - i : block_rows);
}

#if FASTNN_VBYTES == 64
// Rows of at most W values (W = 16 floats or 8 doubles per 512-bit vector: the
// 10 classes of MNIST fit) go faster still: W rows at a time are transposed in
// registers, so that lane l of col[j] holds value j of row l, and every
// row-wise step -- max, exp, sum, log, gradient -- runs on W rows at once.
// Masked loads and stores touch exactly the rows' own elements.
template <class T>
struct NarrowRows {
  typedef typename simd::VT<T>::V V;
  static constexpr int W = simd::VT<T>::W;
  alignas(64) T col[W][W];
  alignas(64) T max[W], sum[W], log_sum[W];

  // Rows [0, rows) of x (rows <= W, cols <= W), transposed; missing rows are zeros.
  void load(const T* x, index_t rows, index_t cols) {
    V r[W];
    for (int i = 0; i < W; ++i) r[i] = i < rows ? simd::load_first(x + i * cols, int(cols)) : V{};
    simd::transpose<T>(r);
    for (int j = 0; j < W; ++j) simd::store(col[j], r[j]);
  }
  void store(T* y, index_t rows, index_t cols) const {
    V r[W];
    for (int j = 0; j < W; ++j) r[j] = simd::load(col[j]);
    simd::transpose<T>(r);
    for (int i = 0; i < rows; ++i) simd::store_first(y + i * cols, int(cols), r[i]);
  }
  void find_max(index_t cols) {
    V m = simd::load(col[0]);
    for (index_t j = 1; j < cols; ++j) {
      const V c = simd::load(col[j]);
      m = c > m ? c : m;
    }
    simd::store(max, m);
  }
  // sum of exp(col - max) and, with `keep_exp`, col = exp(col - max).
  void exp_columns(index_t cols, bool keep_exp) {
    V total = {};
    const V m = simd::load(max);
    for (index_t j = 0; j < cols; ++j) {
      const V e = simd::exp(simd::load(col[j]) - m);
      if (keep_exp) simd::store(col[j], e);
      total += e;
    }
    simd::store(sum, total);
  }
  void take_logs() {
#pragma omp simd
    for (int l = 0; l < W; ++l) log_sum[l] = vlog(sum[l]);
  }
};

template <class T>
inline bool narrow(index_t cols) { return cols <= NarrowRows<T>::W; }
#endif

// Loss of one row, with t' = (1 - s) * target + s / C the smoothed target:
//   loss = sum_c t'_c * (lse - z_c),   dloss/dz_c = p_c * sum_c t'_c - t'_c.
// Every term is taken relative to the row max m, which keeps float32 exact for
// logits as large as 1e4: lse - z = log_sum - (z - m).
template <class T>
struct CrossEntropyRow {
  const CrossEntropyArgs<T>& a;
  T s, uniform, keep, scale;

  explicit CrossEntropyRow(const CrossEntropyArgs<T>& args)
      : a(args), s(T(args.label_smoothing)), uniform(s / T(args.cols)), keep(T(1) - s), scale(T(args.grad_scale)) {}

  // Row i's loss from its max m, sum of exp(z - m) and its log; g, if not null,
  // holds exp(z - m) on entry and the gradient on exit.
  T operator()(index_t i, T m, T sum, T log_sum, T* g) const {
    const index_t cols = a.cols;
    const T* z = a.logits + i * cols;
    if (a.labels) {
      const std::int64_t label = a.labels[i];
      T shifted_sum = 0;
      if (s != T(0)) {
#pragma omp simd reduction(+ : shifted_sum)
        for (index_t j = 0; j < cols; ++j) shifted_sum += z[j] - m;
      }
      if (g) {
        const T p_scale = scale / sum;
        const T u = scale * uniform;
        for (index_t j = 0; j < cols; ++j) g[j] = g[j] * p_scale - u;
        g[label] -= scale * keep;
      }
      return keep * (log_sum - (z[label] - m)) + (s != T(0) ? s * (log_sum - shifted_sum / T(cols)) : T(0));
    }
    const T* t = a.target + i * cols;
    T t_sum = 0, tz_sum = 0;
#pragma omp simd reduction(+ : t_sum, tz_sum)
    for (index_t j = 0; j < cols; ++j) {
      const T tj = keep * t[j] + uniform;
      t_sum += tj;
      tz_sum += tj * (z[j] - m);
    }
    if (g) {
      const T p_scale = scale * t_sum / sum;
      for (index_t j = 0; j < cols; ++j) g[j] = g[j] * p_scale - scale * (keep * t[j] + uniform);
    }
    return log_sum * t_sum - tz_sum;
  }
};

#if FASTNN_VBYTES == 64
// cross_entropy_rows for rows [first, last) of at most W classes, W rows at a
// time (see NarrowRows): the same formulas as CrossEntropyRow, lane by lane.
template <class T>
double narrow_cross_entropy(const CrossEntropyArgs<T>& a, index_t first, index_t last) {
  constexpr int W = NarrowRows<T>::W;
  const index_t cols = a.cols;
  const T s = T(a.label_smoothing), uniform = s / T(cols), keep = T(1) - s, scale = T(a.grad_scale);
  NarrowRows<T> r, t;
  alignas(64) T loss[W], label[W], picked[W], t_sum[W];
  // Summed lane by lane, a chain of W dependent additions per block otherwise.
  alignas(64) double lane_total[W] = {};
  for (index_t i0 = first; i0 < last; i0 += W) {
    const index_t rows = last - i0 < W ? last - i0 : W;
    r.load(a.logits + i0 * cols, rows, cols);
    r.find_max(cols);
    for (int l = 0; l < W; ++l) loss[l] = 0;
    if (a.labels) {
      for (int l = 0; l < W; ++l) label[l] = l < rows ? T(a.labels[i0 + l]) : T(-1);
      for (int l = 0; l < W; ++l) picked[l] = 0;
      for (index_t j = 0; j < cols; ++j)
#pragma omp simd
        for (int l = 0; l < W; ++l) {
          const T shifted = r.col[j][l] - r.max[l];
          picked[l] += label[l] == T(j) ? shifted : T(0);
          loss[l] += shifted;  // the sum of z - max, for the smoothing term
        }
      r.exp_columns(cols, a.dlogits != nullptr);
      r.take_logs();
#pragma omp simd
      for (int l = 0; l < W; ++l)
        loss[l] = keep * (r.log_sum[l] - picked[l]) + (s != T(0) ? s * (r.log_sum[l] - loss[l] / T(cols)) : T(0));
    } else {
      t.load(a.target + i0 * cols, rows, cols);
      for (int l = 0; l < W; ++l) t_sum[l] = 0;
      for (index_t j = 0; j < cols; ++j)
#pragma omp simd
        for (int l = 0; l < W; ++l) {
          const T tj = keep * t.col[j][l] + uniform;
          t_sum[l] += tj;
          loss[l] += tj * (r.col[j][l] - r.max[l]);
        }
      r.exp_columns(cols, a.dlogits != nullptr);
      r.take_logs();
#pragma omp simd
      for (int l = 0; l < W; ++l) loss[l] = r.log_sum[l] * t_sum[l] - loss[l];
    }
    if (a.dlogits) {
      alignas(64) T inv_sum[W];
#pragma omp simd
      for (int l = 0; l < W; ++l) inv_sum[l] = T(1) / r.sum[l];
      for (index_t j = 0; j < cols; ++j)
#pragma omp simd
        for (int l = 0; l < W; ++l) {
          const T p = r.col[j][l] * inv_sum[l];
          r.col[j][l] = a.labels ? scale * (p - uniform - (label[l] == T(j) ? keep : T(0)))
                                 : scale * (p * t_sum[l] - (keep * t.col[j][l] + uniform));
        }
      r.store(a.dlogits + i0 * cols, rows, cols);
    }
    if (a.row_loss)
      for (index_t l = 0; l < rows; ++l) a.row_loss[i0 + l] = loss[l];
#pragma omp simd
    for (int l = 0; l < W; ++l) lane_total[l] += l < rows ? double(loss[l]) : 0.0;
  }
  double total = 0;
  for (int l = 0; l < W; ++l) total += lane_total[l];
  return total;
}
#endif

}  // namespace

template <class T>
void softmax(const SoftmaxArgs<T>& a) {
  const index_t cols = a.cols;
  parallel_for(a.rows, [&](index_t first, index_t last) {
#if FASTNN_VBYTES == 64
    if (narrow<T>(cols)) {
      constexpr int W = NarrowRows<T>::W;
      NarrowRows<T> r;
      for (index_t i0 = first; i0 < last; i0 += W) {
        const index_t rows = last - i0 < W ? last - i0 : W;
        r.load(a.x + i0 * cols, rows, cols);
        r.find_max(cols);
        r.exp_columns(cols, !a.log);
        if (a.log) {
          r.take_logs();
          for (index_t j = 0; j < cols; ++j)
#pragma omp simd
            for (int l = 0; l < W; ++l) r.col[j][l] = (r.col[j][l] - r.max[l]) - r.log_sum[l];
        } else {
          for (index_t j = 0; j < cols; ++j)
#pragma omp simd
            for (int l = 0; l < W; ++l) r.col[j][l] /= r.sum[l];
        }
        r.store(a.y + i0 * cols, rows, cols);
      }
      return;
    }
#endif
    if (cols < kShortRow) {
      ShortRows<T> r;
      T scratch[kShortBlock];
      for_each_short_block(first, last, cols, [&](index_t i0, index_t n_rows) {
        const T* x = a.x + i0 * cols;
        T* y = a.y + i0 * cols;
        if (a.log) {
          // y = (x - max) - log(sum): subtracting the max first keeps float32
          // exact for huge logits; x is read before y is written (y may be x).
          r.exp_rows(x, scratch, n_rows, cols);
          r.take_logs();
          for (index_t i = 0; i < n_rows; ++i)
            for (index_t j = 0; j < cols; ++j) y[i * cols + j] = (x[i * cols + j] - r.max[i]) - r.log_sum[i];
        } else {
          r.exp_rows(x, y, n_rows, cols);
          for (index_t i = 0; i < n_rows; ++i) {
            const T inv = T(1) / r.sum[i];
            for (index_t j = 0; j < cols; ++j) y[i * cols + j] *= inv;
          }
        }
      });
      return;
    }
    for (index_t i = first; i < last; ++i) {
      const T* x = a.x + i * cols;
      T* y = a.y + i * cols;
      const T m = row_max(x, cols);
      if (a.log) {
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (index_t j = 0; j < cols; ++j) sum += vexp(x[j] - m);
        const T log_sum = vlog(sum);
#pragma omp simd
        for (index_t j = 0; j < cols; ++j) y[j] = (x[j] - m) - log_sum;
      } else {
        const T inv = T(1) / exp_shifted(x, m, y, cols);
#pragma omp simd
        for (index_t j = 0; j < cols; ++j) y[j] *= inv;
      }
    }
  }, row_grain(cols));
}

template <class T>
double cross_entropy(const CrossEntropyArgs<T>& a) {
  const index_t cols = a.cols;
  const CrossEntropyRow<T> row_loss(a);
  return parallel_sum(a.rows, [&](index_t first, index_t last) {
    double total = 0;
#if FASTNN_VBYTES == 64
    if (narrow<T>(cols)) return narrow_cross_entropy(a, first, last);
#endif
    if (cols < kShortRow) {
      ShortRows<T> r;
      T scratch[kShortBlock];
      for_each_short_block(first, last, cols, [&](index_t i0, index_t n_rows) {
        T* g0 = a.dlogits ? a.dlogits + i0 * cols : nullptr;
        r.exp_rows(a.logits + i0 * cols, g0 ? g0 : scratch, n_rows, cols);
        r.take_logs();
        for (index_t i = 0; i < n_rows; ++i) {
          const T loss = row_loss(i0 + i, r.max[i], r.sum[i], r.log_sum[i], g0 ? g0 + i * cols : nullptr);
          if (a.row_loss) a.row_loss[i0 + i] = loss;
          total += double(loss);
        }
      });
      return total;
    }
    for (index_t i = first; i < last; ++i) {
      const T* z = a.logits + i * cols;
      T* g = a.dlogits ? a.dlogits + i * cols : nullptr;
      const T m = row_max(z, cols);
      T sum = 0;
      if (g) {
        sum = exp_shifted(z, m, g, cols);
      } else {
#pragma omp simd reduction(+ : sum)
        for (index_t j = 0; j < cols; ++j) sum += vexp(z[j] - m);
      }
      const T loss = row_loss(i, m, sum, vlog(sum), g);
      if (a.row_loss) a.row_loss[i] = loss;
      total += double(loss);
    }
    return total;
  }, row_grain(cols));
}

FASTNN_ISA_KERNEL(softmax)
FASTNN_ISA_KERNEL(cross_entropy)

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
