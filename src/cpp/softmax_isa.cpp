// Softmax, log-softmax and fused softmax-cross-entropy, one pass per row.
// Compiled once per instruction set (see FASTNN_ISA_SOURCES); the row loops
// are written for the auto-vectorizer with vexp() from vector_math.h.
#include <cmath>

#include "dispatch.h"
#include "parallel.h"
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

// Rows shorter than this take the block path below; longer rows vectorise on
// their own and are better served by one fused exp-and-sum pass per row.
constexpr index_t kShortRow = 64;

// e (rows, cols) = exp(x - row max of x) for a block of rows, returning nothing:
// the shift is written per row, then exp runs over the block as one flat loop,
// so it is vectorised even when a row is shorter than a vector (C = 10).
// e may be x itself.
template <class T>
inline void exp_shifted_block(const T* x, T* e, index_t rows, index_t cols) {
  for (index_t i = 0; i < rows; ++i) {
    const T m = row_max(x + i * cols, cols);
    for (index_t j = 0; j < cols; ++j) e[i * cols + j] = x[i * cols + j] - m;
  }
  const index_t n = rows * cols;
#pragma omp simd
  for (index_t k = 0; k < n; ++k) e[k] = vexp(e[k]);
}

template <class T>
void softmax_rows(const SoftmaxArgs<T>& a) {
  const index_t cols = a.cols;
  parallel_for(a.rows, [&](index_t first, index_t last) {
  for (index_t i = first; i < last; ++i) {
    const T* x = a.x + i * cols;
    T* y = a.y + i * cols;
    if (a.log) {
      // y = (x - m) - log(sum): subtracting m first keeps float32 exact for huge
      // logits; y is written only after x is read, so y may be x itself.
      const T m = row_max(x, cols);
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (index_t j = 0; j < cols; ++j) sum += vexp(x[j] - m);
      const T log_sum = std::log(sum);
#pragma omp simd
      for (index_t j = 0; j < cols; ++j) y[j] = (x[j] - m) - log_sum;
    }
  }
  if (!a.log) {
    const bool short_rows = cols < kShortRow;
    if (short_rows) exp_shifted_block(a.x + first * cols, a.y + first * cols, last - first, cols);
    for (index_t i = first; i < last; ++i) {
      T* y = a.y + i * cols;
      T sum = 0;
      if (short_rows) {
        for (index_t j = 0; j < cols; ++j) sum += y[j];
      } else {
        const T* x = a.x + i * cols;
        sum = exp_shifted(x, row_max(x, cols), y, cols);
      }
      const T inv = T(1) / sum;
#pragma omp simd
      for (index_t j = 0; j < cols; ++j) y[j] *= inv;
    }
  }
  }, row_grain(cols));
}

// Loss of one row, with t' = (1 - s) * target + s / C the smoothed target:
//   loss = sum_c t'_c * (lse - z_c),   dloss/dz_c = p_c * sum_c t'_c - t'_c.
template <class T>
double cross_entropy_rows(const CrossEntropyArgs<T>& a) {
  const index_t cols = a.cols;
  const T s = T(a.label_smoothing);
  const T uniform = s / T(cols);
  const T keep = T(1) - s;
  const T scale = T(a.grad_scale);
  return parallel_sum(a.rows, [&](index_t first, index_t last) {
  double total = 0;
  const bool short_rows = cols < kShortRow;
  if (a.dlogits && short_rows)
    exp_shifted_block(a.logits + first * cols, a.dlogits + first * cols, last - first, cols);
  for (index_t i = first; i < last; ++i) {
    const T* z = a.logits + i * cols;
    T* g = a.dlogits ? a.dlogits + i * cols : nullptr;
    const T m = row_max(z, cols);
    T sum = 0;
    if (g && short_rows) {
      for (index_t j = 0; j < cols; ++j) sum += g[j];
    } else if (g) {
      sum = exp_shifted(z, m, g, cols);
    } else {
#pragma omp simd reduction(+ : sum)
      for (index_t j = 0; j < cols; ++j) sum += vexp(z[j] - m);
    }
    // Every term is taken relative to the row max m, which keeps float32 exact
    // for logits as large as 1e4: lse - z = log_sum - (z - m).
    const T log_sum = std::log(sum);
    T loss;
    if (a.labels) {
      const std::int64_t label = a.labels[i];
      T shifted_sum = 0;
      if (s != T(0)) {
#pragma omp simd reduction(+ : shifted_sum)
        for (index_t j = 0; j < cols; ++j) shifted_sum += z[j] - m;
      }
      loss = keep * (log_sum - (z[label] - m)) + (s != T(0) ? s * (log_sum - shifted_sum / T(cols)) : T(0));
      if (g) {
        const T p_scale = scale / sum;
        const T u = scale * uniform;
#pragma omp simd
        for (index_t j = 0; j < cols; ++j) g[j] = g[j] * p_scale - u;
        g[label] -= scale * keep;
      }
    } else {
      const T* t = a.target + i * cols;
      T t_sum = 0, tz_sum = 0;
#pragma omp simd reduction(+ : t_sum, tz_sum)
      for (index_t j = 0; j < cols; ++j) {
        const T tj = keep * t[j] + uniform;
        t_sum += tj;
        tz_sum += tj * (z[j] - m);
      }
      loss = log_sum * t_sum - tz_sum;
      if (g) {
        const T p_scale = scale * t_sum / sum;
#pragma omp simd
        for (index_t j = 0; j < cols; ++j) g[j] = g[j] * p_scale - scale * (keep * t[j] + uniform);
      }
    }
    if (a.row_loss) a.row_loss[i] = loss;
    total += double(loss);
  }
  return total;
  }, row_grain(cols));
}

}  // namespace

void softmax_f32(const SoftmaxArgs<float>& a) { softmax_rows(a); }
void softmax_f64(const SoftmaxArgs<double>& a) { softmax_rows(a); }
double cross_entropy_f32(const CrossEntropyArgs<float>& a) { return cross_entropy_rows(a); }
double cross_entropy_f64(const CrossEntropyArgs<double>& a) { return cross_entropy_rows(a); }

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
