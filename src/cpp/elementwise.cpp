// Activation functions and their gradients. Each is one pass over n elements;
// the forward takes x, the backward takes what its derivative is simplest in
// (the output y for relu/sigmoid/tanh, the input x for leaky_relu/elu).
#include <cmath>

#include "kernels.h"
#include "parallel.h"

namespace fastnn {
namespace {

template <class T, class Op>
void map1(const T* a, T* out, index_t n, Op op) {
  parallel_for(n, [&](index_t begin, index_t end) {
#pragma omp simd
    for (index_t i = begin; i < end; ++i) out[i] = op(a[i]);
  });
}

template <class T, class Op>
void map2(const T* a, const T* b, T* out, index_t n, Op op) {
  parallel_for(n, [&](index_t begin, index_t end) {
#pragma omp simd
    for (index_t i = begin; i < end; ++i) out[i] = op(a[i], b[i]);
  });
}

// Split by sign so that exp() only sees non-positive arguments and never overflows.
template <class T>
inline T sigmoid(T x) {
  const T e = std::exp(-std::fabs(x));
  return x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
}

}  // namespace

template <class T> void relu_forward(const T* x, T* y, index_t n) {
  // x > 0 ? x : 0 keeps NaN as NaN only if written this way round.
  map1(x, y, n, [](T v) { return v > T(0) || v != v ? v : T(0); });
}
template <class T> void relu_backward(const T* y, const T* dy, T* dx, index_t n) {
  map2(y, dy, dx, n, [](T out, T g) { return out > T(0) ? g : T(0); });
}
template <class T> void sigmoid_forward(const T* x, T* y, index_t n) {
  map1(x, y, n, [](T v) { return sigmoid(v); });
}
template <class T> void sigmoid_backward(const T* y, const T* dy, T* dx, index_t n) {
  map2(y, dy, dx, n, [](T out, T g) { return g * out * (T(1) - out); });
}
template <class T> void tanh_forward(const T* x, T* y, index_t n) {
  map1(x, y, n, [](T v) { return std::tanh(v); });
}
template <class T> void tanh_backward(const T* y, const T* dy, T* dx, index_t n) {
  map2(y, dy, dx, n, [](T out, T g) { return g * (T(1) - out * out); });
}
template <class T> void leaky_relu_forward(const T* x, T* y, index_t n, T negative_slope) {
  map1(x, y, n, [=](T v) { return v > T(0) ? v : v * negative_slope; });
}
template <class T> void leaky_relu_backward(const T* x, const T* dy, T* dx, index_t n, T negative_slope) {
  map2(x, dy, dx, n, [=](T in, T g) { return in > T(0) ? g : g * negative_slope; });
}
template <class T> void elu_forward(const T* x, T* y, index_t n, T alpha) {
  map1(x, y, n, [=](T v) { return v > T(0) ? v : alpha * std::expm1(v); });
}
template <class T> void elu_backward(const T* x, const T* dy, T* dx, index_t n, T alpha) {
  map2(x, dy, dx, n, [=](T in, T g) { return in > T(0) ? g : g * alpha * std::exp(in); });
}

#define FASTNN_INSTANTIATE(T)                                                         \
  template void relu_forward<T>(const T*, T*, index_t);                               \
  template void relu_backward<T>(const T*, const T*, T*, index_t);                    \
  template void sigmoid_forward<T>(const T*, T*, index_t);                            \
  template void sigmoid_backward<T>(const T*, const T*, T*, index_t);                 \
  template void tanh_forward<T>(const T*, T*, index_t);                               \
  template void tanh_backward<T>(const T*, const T*, T*, index_t);                    \
  template void leaky_relu_forward<T>(const T*, T*, index_t, T);                      \
  template void leaky_relu_backward<T>(const T*, const T*, T*, index_t, T);           \
  template void elu_forward<T>(const T*, T*, index_t, T);                             \
  template void elu_backward<T>(const T*, const T*, T*, index_t, T);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)

}  // namespace fastnn
