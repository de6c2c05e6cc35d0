// Loss functions on predictions that are not logits of a softmax (that one is
// the fused softmax_isa.cpp). Sums are accumulated in double.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "parallel.h"

namespace fastnn {

namespace {
constexpr double kLogEps = 1e-7;     // the textbook's guard inside log(y + eps)
constexpr double kLogFloor = -100.0;  // torch's clamp of log() in BCE

// Sum over i of loss(i), writing each term to per_element when asked.
template <class T, class Loss>
double sum_losses(T* per_element, index_t n, Loss loss) {
  return parallel_sum(n, [&](index_t begin, index_t end) {
    double s = 0;
    for (index_t i = begin; i < end; ++i) {
      const T v = loss(i);
      if (per_element) per_element[i] = v;
      s += double(v);
    }
    return s;
  });
}
}  // namespace

template <class T> double squared_error(const T* y, const T* t, T* per_element, index_t n) {
  return sum_losses(per_element, n, [&](index_t i) { return (y[i] - t[i]) * (y[i] - t[i]); });
}

template <class T> void squared_error_backward(const T* y, const T* t, T* dy, index_t n, double scale) {
  const T s = T(scale);
  parallel_for(n, [&](index_t begin, index_t end) {
#pragma omp simd
    for (index_t i = begin; i < end; ++i) dy[i] = s * (y[i] - t[i]);
  });
}

template <class T>
double cross_entropy_error(const T* y, const std::int64_t* labels, const T* t, index_t rows, index_t cols) {
  if (labels) {
    return sum_losses<T>(nullptr, rows,
                         [&](index_t i) { return T(-std::log(double(y[i * cols + labels[i]]) + kLogEps)); });
  }
  return sum_losses<T>(nullptr, rows * cols,
                       [&](index_t i) { return T(-double(t[i]) * std::log(double(y[i]) + kLogEps)); });
}

template <class T>
void cross_entropy_error_backward(const T* y, const std::int64_t* labels, const T* t, T* dy,
                                  index_t rows, index_t cols, double scale) {
  if (labels) {
    std::fill(dy, dy + rows * cols, T(0));
    for (index_t i = 0; i < rows; ++i) {
      const index_t k = i * cols + labels[i];
      dy[k] = T(-scale / (double(y[k]) + kLogEps));
    }
    return;
  }
  parallel_for(rows * cols, [&](index_t begin, index_t end) {
    for (index_t i = begin; i < end; ++i) dy[i] = T(-scale * double(t[i]) / (double(y[i]) + kLogEps));
  });
}

template <class T> double binary_cross_entropy(const T* p, const T* t, T* per_element, index_t n) {
  return sum_losses(per_element, n, [&](index_t i) {
    const double log_p = std::max(std::log(double(p[i])), kLogFloor);
    const double log_q = std::max(std::log(1.0 - double(p[i])), kLogFloor);
    return T(-(double(t[i]) * log_p + (1.0 - double(t[i])) * log_q));
  });
}

template <class T> void binary_cross_entropy_backward(const T* p, const T* t, T* dp, index_t n, double scale) {
  parallel_for(n, [&](index_t begin, index_t end) {
    for (index_t i = begin; i < end; ++i) {
      const double pi = p[i];
      dp[i] = T(scale * (pi - double(t[i])) / std::max(pi * (1.0 - pi), 1e-12));
    }
  });
}

template <class T>
double binary_cross_entropy_with_logits(const T* z, const T* t, T* per_element, index_t n) {
  return sum_losses(per_element, n, [&](index_t i) {
    const T zi = z[i];
    return (zi > T(0) ? zi : T(0)) - zi * t[i] + std::log1p(std::exp(-std::fabs(zi)));
  });
}

template <class T>
void binary_cross_entropy_with_logits_backward(const T* z, const T* t, T* dz, index_t n, double scale) {
  const T s = T(scale);
  parallel_for(n, [&](index_t begin, index_t end) {
    for (index_t i = begin; i < end; ++i) {
      const T e = std::exp(-std::fabs(z[i]));
      const T sig = z[i] >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
      dz[i] = s * (sig - t[i]);
    }
  });
}

#define FASTNN_INSTANTIATE(T)                                                                         \
  template double squared_error<T>(const T*, const T*, T*, index_t);                                   \
  template void squared_error_backward<T>(const T*, const T*, T*, index_t, double);                    \
  template double cross_entropy_error<T>(const T*, const std::int64_t*, const T*, index_t, index_t);   \
  template void cross_entropy_error_backward<T>(const T*, const std::int64_t*, const T*, T*, index_t,  \
                                                index_t, double);                                      \
  template double binary_cross_entropy<T>(const T*, const T*, T*, index_t);                            \
  template void binary_cross_entropy_backward<T>(const T*, const T*, T*, index_t, double);             \
  template double binary_cross_entropy_with_logits<T>(const T*, const T*, T*, index_t);                \
  template void binary_cross_entropy_with_logits_backward<T>(const T*, const T*, T*, index_t, double);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)

}  // namespace fastnn
