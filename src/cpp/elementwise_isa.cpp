// Activation functions and their gradients, compiled once per instruction set
// (exp, expm1 and tanh come from vector_math.h, so sigmoid, tanh and elu
// vectorise). Each is one pass over n elements; the forward takes x, the
// backward takes what its derivative is simplest in (the output y for
// relu/sigmoid/tanh, the input x for leaky_relu/elu).
#include "dispatch.h"
#include "parallel.h"
#include "vector_math.h"

namespace fastnn {
namespace FASTNN_ISA_NS {
namespace {

// out[i] = op(a[i], b[i]) over [0, n) (b may be null: op then ignores it).
template <class T, class Op>
void map(const T* a, const T* b, T* out, index_t n, Op op) {
  parallel_for_each(n, [=](index_t i) { out[i] = op(a[i], b ? b[i] : T(0)); });
}

template <class T>
void elementwise_impl(const ElementwiseArgs<T>& e) {
  const T p = e.param;
  switch (e.kind) {
    // x > 0 ? x : 0 keeps NaN as NaN only if written this way round.
    case Elementwise::relu: return map(e.a, e.b, e.out, e.n, [](T x, T) { return x > T(0) || x != x ? x : T(0); });
    case Elementwise::relu_backward: return map(e.a, e.b, e.out, e.n, [](T y, T g) { return y > T(0) ? g : T(0); });
    case Elementwise::sigmoid: return map(e.a, e.b, e.out, e.n, [](T x, T) { return vsigmoid(x); });
    case Elementwise::sigmoid_backward:
      return map(e.a, e.b, e.out, e.n, [](T y, T g) { return g * y * (T(1) - y); });
    case Elementwise::tanh: return map(e.a, e.b, e.out, e.n, [](T x, T) { return vtanh(x); });
    case Elementwise::tanh_backward: return map(e.a, e.b, e.out, e.n, [](T y, T g) { return g * (T(1) - y * y); });
    case Elementwise::leaky_relu: return map(e.a, e.b, e.out, e.n, [p](T x, T) { return x > T(0) ? x : x * p; });
    case Elementwise::leaky_relu_backward:
      return map(e.a, e.b, e.out, e.n, [p](T x, T g) { return x > T(0) ? g : g * p; });
    case Elementwise::elu: return map(e.a, e.b, e.out, e.n, [p](T x, T) { return x > T(0) ? x : p * vexpm1(x); });
    case Elementwise::elu_backward:
      return map(e.a, e.b, e.out, e.n, [p](T x, T g) { return x > T(0) ? g : g * p * vexp(x); });
  }
}

}  // namespace

void elementwise_f32(const ElementwiseArgs<float>& e) { elementwise_impl(e); }
void elementwise_f64(const ElementwiseArgs<double>& e) { elementwise_impl(e); }

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
