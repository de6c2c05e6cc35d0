// Optimizer updates: one pass over a parameter and its state, in place, with
// torch.optim's update rules (single-tensor form) and defaults.
#include <cmath>

#include "kernels.h"
#include "parallel.h"

namespace fastnn {

namespace {
// Elementwise work per parameter element is a few flops; split only large tensors.
constexpr index_t kOptimGrain = 1 << 16;

template <class Body>
void for_each_element(index_t n, Body body) {
  parallel_for(n, [&](index_t begin, index_t end) {
#pragma omp simd
    for (index_t i = begin; i < end; ++i) body(i);
  }, kOptimGrain);
}
}  // namespace

template <class T>
void sgd_step(T* param, const T* grad, T* momentum_buf, index_t n, double lr, double momentum,
              double dampening, bool nesterov, double weight_decay, bool maximize, bool first_step) {
  const T lr_ = T(lr), mu = T(momentum), damp = T(1.0 - dampening), wd = T(weight_decay);
  const T sign = maximize ? T(-1) : T(1);
  const bool use_momentum = momentum != 0.0;
  for_each_element(n, [&](index_t i) {
    T g = sign * grad[i];
    if (wd != T(0)) g += wd * param[i];
    if (use_momentum) {
      const T buf = first_step ? g : mu * momentum_buf[i] + damp * g;
      momentum_buf[i] = buf;
      g = nesterov ? g + mu * buf : buf;
    }
    param[i] -= lr_ * g;
  });
}

template <class T>
void adagrad_step(T* param, const T* grad, T* state_sum, index_t n, double step, double lr,
                  double lr_decay, double weight_decay, double eps, bool maximize) {
  const T clr = T(lr / (1.0 + (step - 1.0) * lr_decay)), wd = T(weight_decay), eps_ = T(eps);
  const T sign = maximize ? T(-1) : T(1);
  for_each_element(n, [&](index_t i) {
    T g = sign * grad[i];
    if (wd != T(0)) g += wd * param[i];
    const T s = state_sum[i] + g * g;
    state_sum[i] = s;
    param[i] -= clr * g / (std::sqrt(s) + eps_);
  });
}

template <class T>
void rmsprop_step(T* param, const T* grad, T* square_avg, T* grad_avg, T* momentum_buf, index_t n,
                  double lr, double alpha, double eps, double weight_decay, double momentum,
                  bool centered, bool maximize) {
  const T lr_ = T(lr), a = T(alpha), one_minus_a = T(1.0 - alpha), eps_ = T(eps), wd = T(weight_decay),
          mu = T(momentum);
  const T sign = maximize ? T(-1) : T(1);
  const bool use_momentum = momentum > 0.0;
  for_each_element(n, [&](index_t i) {
    T g = sign * grad[i];
    if (wd != T(0)) g += wd * param[i];
    const T sq = a * square_avg[i] + one_minus_a * g * g;
    square_avg[i] = sq;
    T avg;
    if (centered) {
      const T ga = a * grad_avg[i] + one_minus_a * g;
      grad_avg[i] = ga;
      avg = std::sqrt(sq - ga * ga) + eps_;
    } else {
      avg = std::sqrt(sq) + eps_;
    }
    if (use_momentum) {
      const T buf = mu * momentum_buf[i] + g / avg;
      momentum_buf[i] = buf;
      param[i] -= lr_ * buf;
    } else {
      param[i] -= lr_ * g / avg;
    }
  });
}

template <class T>
void adam_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, index_t n, double step, double lr,
               double beta1, double beta2, double eps, double weight_decay,
               bool decoupled_weight_decay, bool maximize) {
  const double bias_correction1 = 1.0 - std::pow(beta1, step);
  const double bias_correction2 = 1.0 - std::pow(beta2, step);
  const T step_size = T(lr / bias_correction1);
  const T inv_sqrt_bc2 = T(1.0 / std::sqrt(bias_correction2));
  const T b1 = T(beta1), b2 = T(beta2), one_minus_b1 = T(1.0 - beta1), one_minus_b2 = T(1.0 - beta2);
  const T eps_ = T(eps);
  const T decay = decoupled_weight_decay ? T(1.0 - lr * weight_decay) : T(1);
  const T coupled_wd = decoupled_weight_decay ? T(0) : T(weight_decay);
  const T sign = maximize ? T(-1) : T(1);
  for_each_element(n, [&](index_t i) {
    const T p = param[i] * decay;
    T g = sign * grad[i];
    // Skipped, not multiplied by zero, so that an inf parameter does not turn the moments into NaN.
    if (coupled_wd != T(0)) g += coupled_wd * p;
    const T m = b1 * exp_avg[i] + one_minus_b1 * g;
    const T v = b2 * exp_avg_sq[i] + one_minus_b2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p - step_size * m / (std::sqrt(v) * inv_sqrt_bc2 + eps_);
  });
}

#define FASTNN_INSTANTIATE(T)                                                                           \
  template void sgd_step<T>(T*, const T*, T*, index_t, double, double, double, bool, double, bool, bool); \
  template void adagrad_step<T>(T*, const T*, T*, index_t, double, double, double, double, double, bool); \
  template void rmsprop_step<T>(T*, const T*, T*, T*, T*, index_t, double, double, double, double,       \
                                double, bool, bool);                                                     \
  template void adam_step<T>(T*, const T*, T*, T*, index_t, double, double, double, double, double,     \
                             double, bool, bool);
FASTNN_INSTANTIATE(float)
FASTNN_INSTANTIATE(double)

}  // namespace fastnn
