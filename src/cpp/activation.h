// Every activation, written once: its forward f and its gradient.
//
// FASTNN_ACTIVATIONS lists them. From the list come the Act enum, _core's
// functions name(x) and name_backward(saved, dy) (bindings.cpp), the
// elementwise kernel (elementwise_isa.cpp) and, for the fusable ones, their
// fusion into a linear layer: the stores of the GEMM and of the sparse product
// apply f, linear_backward's first pass and the gate in the dx GEMM's store
// multiply by f'.
//
// X(name, parameter, default_value, gradient_of):
//   parameter      the keyword of the activation's parameter in Python, or nullptr;
//   default_value  that parameter's default;
//   gradient_of    what the gradient is written in: `output` (y = f(x), which a
//                  linear layer keeps, so the activation is fusable) or `input` (x).
#pragma once
#define FASTNN_ACTIVATIONS(X)                   \
  X(relu, nullptr, 0.0, output)                 \
  X(sigmoid, nullptr, 0.0, output)              \
  X(tanh, nullptr, 0.0, output)                 \
  X(leaky_relu, "negative_slope", 0.01, input)  \
  X(elu, "alpha", 1.0, input)

#include <type_traits>

#include "common.h"
#ifndef FASTNN_ISA_NS
#error "FASTNN_ISA_NS names the instruction set being compiled (CMakeLists.txt defines it for every source)"
#endif
#include "vector_math.h"

#define FASTNN_FUSABLE_output true
#define FASTNN_FUSABLE_input false
#define FASTNN_IF_FUSABLE_output(...) __VA_ARGS__
#define FASTNN_IF_FUSABLE_input(...)

namespace fastnn {

#define FASTNN_ACT_ENUMERATOR(name, ...) name,
enum class Act : int { none = 0, FASTNN_ACTIVATIONS(FASTNN_ACT_ENUMERATOR) };
#undef FASTNN_ACT_ENUMERATOR

struct ActivationInfo {
  Act act;
  const char* name;
  const char* parameter;  // null: the activation has none
  double default_parameter;
  bool fusable;  // its gradient is written in its output y (gradient_of = output)
};
#define FASTNN_ACT_INFO(name, parameter, default_value, gradient_of) \
  ActivationInfo{Act::name, #name, parameter, default_value, FASTNN_FUSABLE_##gradient_of},
constexpr ActivationInfo kActivations[] = {FASTNN_ACTIVATIONS(FASTNN_ACT_INFO)};
#undef FASTNN_ACT_INFO

constexpr bool fusable_ones_have_no_parameter() {
  for (const ActivationInfo& a : kActivations)
    if (a.fusable && a.parameter != nullptr) return false;
  return true;
}
static_assert(fusable_ones_have_no_parameter(), "a fused activation gets no parameter from the GEMM's store");

// The math is inline code, compiled in the namespace of each instruction set
// (the sources compiled once use `baseline`, see CMakeLists.txt).
namespace FASTNN_ISA_NS {

// Activation<A>::forward(x, p) = f(x) and Activation<A>::grad(s, dy, p) =
// dy * f'(x), where s is what gradient_of names (y or x) and p the parameter.
// Both take a T, or a vector of T where the formula allows it: relu's forward
// and the fusable gradients, which the GEMM's store applies in registers.
template <Act A> struct Activation;

template <> struct Activation<Act::none> {
  template <class V, class T> static V forward(V x, T) { return x; }
  template <class V, class T> static V grad(V, V dy, T) { return dy; }
};

// np.maximum(x, 0): a NaN passes, as (NaN <= 0) is false, and -0 gives +0.
// Written with vector extensions: GCC 12's _mm512_max_ps trips -Wmaybe-uninitialized.
template <> struct Activation<Act::relu> {
  template <class V, class T> static V forward(V x, T) {
    const V zero = {};
    return x <= zero ? zero : x;
  }
  template <class V, class T> static V grad(V y, V dy, T) {
    const V zero = {};
    return y > zero ? dy : zero;
  }
};

template <> struct Activation<Act::sigmoid> {
  template <class T> static T forward(T x, T) { return vsigmoid(x); }
  template <class V, class T> static V grad(V y, V dy, T) { return dy * y * (T(1) - y); }
};

template <> struct Activation<Act::tanh> {
  template <class T> static T forward(T x, T) { return vtanh(x); }
  template <class V, class T> static V grad(V y, V dy, T) { return dy * (T(1) - y * y); }
};

// p is negative_slope.
template <> struct Activation<Act::leaky_relu> {
  template <class T> static T forward(T x, T p) { return x > T(0) ? x : x * p; }
  template <class T> static T grad(T x, T dy, T p) { return x > T(0) ? dy : dy * p; }
};

// p is alpha.
template <> struct Activation<Act::elu> {
  template <class T> static T forward(T x, T p) { return x > T(0) ? x : p * vexpm1(x); }
  template <class T> static T grad(T x, T dy, T p) { return x > T(0) ? dy : dy * p * vexp(x); }
};

// f(std::integral_constant<Act, A>()) for A = act, so that a loop inside f
// sees a constant activation (a switch inside the loop would keep it from
// vectorising): with_activation takes every activation, with_fusable only the
// fusable ones. Anything else is none.
#define FASTNN_ACT_CASE(name) \
  case Act::name: return f(std::integral_constant<Act, Act::name>());
#define FASTNN_ANY_CASE(name, ...) FASTNN_ACT_CASE(name)
#define FASTNN_FUSABLE_CASE(name, parameter, default_value, gradient_of) \
  FASTNN_IF_FUSABLE_##gradient_of(FASTNN_ACT_CASE(name))
template <class F>
inline decltype(auto) with_activation(Act act, F f) {
  switch (act) {
    FASTNN_ACTIVATIONS(FASTNN_ANY_CASE)
    default: return f(std::integral_constant<Act, Act::none>());
  }
}
template <class F>
inline decltype(auto) with_fusable(Act act, F f) {
  switch (act) {
    FASTNN_ACTIVATIONS(FASTNN_FUSABLE_CASE)
    default: return f(std::integral_constant<Act, Act::none>());
  }
}
#undef FASTNN_FUSABLE_CASE
#undef FASTNN_ANY_CASE
#undef FASTNN_ACT_CASE

// f(x) for a fusable act, on one value.
template <class T>
inline T activate(T x, Act act) {
  return with_fusable(act, [x](auto a) { return Activation<decltype(a)::value>::forward(x, T(0)); });
}

// dy * f'(.) for a fusable act, from its output y; V is T or a vector of T.
template <class T, class V>
inline V activation_grad(V y, V dy, Act act) {
  return with_fusable(act, [&](auto a) { return Activation<decltype(a)::value>::grad(y, dy, T(0)); });
}

// Whether a product's store leaves act to a pass of its own (apply_activation):
// relu, a compare and a select, is applied in registers instead.
constexpr bool needs_pass(Act act) { return act != Act::none && act != Act::relu; }

// p[0, n) = f(p[0, n)) for a fusable act, one vectorised pass.
template <class T>
inline void apply_activation(T* p, index_t n, Act act) {
  with_fusable(act, [=](auto a) {
    constexpr Act A = decltype(a)::value;
    if constexpr (A != Act::none) {
#pragma omp simd
      for (index_t i = 0; i < n; ++i) p[i] = Activation<A>::forward(p[i], T(0));
    }
  });
}

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
