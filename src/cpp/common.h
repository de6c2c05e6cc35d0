// Types shared by every kernel. No Python here: kernels see raw pointers and sizes.
#pragma once
#include <cstdint>

namespace fastnn {

using index_t = std::int64_t;

// Activations that can be fused into a linear layer's GEMM store (forward) and
// into the gradient pass before the GEMMs (backward). The backward form of each
// is written in terms of the activation's *output* y, which the layer keeps.
enum class Act : int { none = 0, relu = 1, sigmoid = 2, tanh = 3 };

// dL/dz = dy * act'(z), from the activation's output y = act(z) and dy = dL/dy,
// for V = T or a vector of T. A loop that passes a constant act vectorises.
template <class T, class V>
inline V activation_grad(V y, V dy, Act act) {
  const V zero = {};
  switch (act) {
    case Act::relu: return y > zero ? dy : zero;
    case Act::sigmoid: return dy * y * (T(1) - y);
    case Act::tanh: return dy * (T(1) - y * y);
    default: return dy;
  }
}

}  // namespace fastnn
