// The activations of activation.h and their gradients, elementwise, compiled
// once per instruction set (exp, expm1 and tanh come from vector_math.h, so
// sigmoid, tanh and elu vectorise). One pass over n elements.
#include "dispatch.h"
#include "parallel.h"

namespace fastnn {
namespace FASTNN_ISA_NS {
namespace {

// out[i] = op(a[i], b[i]) over [0, n) (b may be null: op then ignores it).
template <class T, class Op>
void map(const T* a, const T* b, T* out, index_t n, Op op) {
  parallel_for_each(n, [=](index_t i) { out[i] = op(a[i], b ? b[i] : T(0)); });
}

}  // namespace

template <class T>
void elementwise(const ElementwiseArgs<T>& e) {
  const T p = e.param;
  with_activation(e.act, [&](auto act) {
    using F = Activation<decltype(act)::value>;
    if (e.backward) map(e.a, e.b, e.out, e.n, [p](T saved, T dy) { return F::grad(saved, dy, p); });
    else map(e.a, e.b, e.out, e.n, [p](T x, T) { return F::forward(x, p); });
  });
}
FASTNN_ISA_KERNEL(elementwise)

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
