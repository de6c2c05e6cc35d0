// Optimizer updates: one pass over a parameter and its state, in place, with
// torch.optim's update rules (single-tensor form) and defaults.
// Compiled once per instruction set (see FASTNN_ISA_SOURCES): the square roots
// and divisions make these compute-bound, so wider vectors pay.
#include <cmath>

#include "dispatch.h"
#include "parallel.h"

namespace fastnn {
namespace FASTNN_ISA_NS {

namespace {
// Tensors from 16k elements on are split over the threads: the updates are
// compute-bound, so a second thread pays at a smaller size than kParallelGrain.
constexpr index_t kOptimGrain = 1 << 14;

template <class Body>
void for_each_element(index_t n, Body body) {
  parallel_for_each(n, body, kOptimGrain);
}

}  // namespace

template <class T>
void sgd_step(const SgdArgs<T>& h) {
  T* param = h.param;
  const T* grad = h.grad;
  T* momentum_buf = h.momentum_buf;
  const T lr_ = T(h.lr), mu = T(h.momentum), damp = T(1.0 - h.dampening), wd = T(h.weight_decay);
  const T sign = h.maximize ? T(-1) : T(1);
  const bool use_momentum = h.momentum != 0.0, nesterov = h.nesterov, first_step = h.first_step;
  for_each_element(h.n, [=](index_t i) {
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
void adagrad_step(const AdagradArgs<T>& h) {
  T* param = h.param;
  const T* grad = h.grad;
  T* state_sum = h.state_sum;
  const T clr = T(h.lr / (1.0 + (h.step - 1.0) * h.lr_decay)), wd = T(h.weight_decay), eps_ = T(h.eps);
  const T sign = h.maximize ? T(-1) : T(1);
  for_each_element(h.n, [=](index_t i) {
    T g = sign * grad[i];
    if (wd != T(0)) g += wd * param[i];
    const T s = state_sum[i] + g * g;
    state_sum[i] = s;
    param[i] -= clr * g / (std::sqrt(s) + eps_);
  });
}

template <class T>
void rmsprop_step(const RmspropArgs<T>& h) {
  T* param = h.param;
  const T* grad = h.grad;
  T *square_avg = h.square_avg, *grad_avg = h.grad_avg, *momentum_buf = h.momentum_buf;
  const T lr_ = T(h.lr), a = T(h.alpha), one_minus_a = T(1.0 - h.alpha), eps_ = T(h.eps),
          wd = T(h.weight_decay), mu = T(h.momentum);
  const T sign = h.maximize ? T(-1) : T(1);
  const bool use_momentum = h.momentum > 0.0, centered = h.centered;
  for_each_element(h.n, [=](index_t i) {
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
void adam_step(const AdamArgs<T>& h) {
  T* param = h.param;
  const T* grad = h.grad;
  T *exp_avg = h.exp_avg, *exp_avg_sq = h.exp_avg_sq;
  const double bias_correction1 = 1.0 - std::pow(h.beta1, h.step);
  const double bias_correction2 = 1.0 - std::pow(h.beta2, h.step);
  const T step_size = T(h.lr / bias_correction1);
  const T inv_sqrt_bc2 = T(1.0 / std::sqrt(bias_correction2));
  const T b1 = T(h.beta1), b2 = T(h.beta2), one_minus_b1 = T(1.0 - h.beta1), one_minus_b2 = T(1.0 - h.beta2);
  const T eps_ = T(h.eps);
  const T decay = h.decoupled_weight_decay ? T(1.0 - h.lr * h.weight_decay) : T(1);
  const T coupled_wd = h.decoupled_weight_decay ? T(0) : T(h.weight_decay);
  const T sign = h.maximize ? T(-1) : T(1);
  for_each_element(h.n, [=](index_t i) {
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

FASTNN_ISA_KERNEL(sgd_step)
FASTNN_ISA_KERNEL(adagrad_step)
FASTNN_ISA_KERNEL(rmsprop_step)
FASTNN_ISA_KERNEL(adam_step)

}  // namespace FASTNN_ISA_NS
}  // namespace fastnn
