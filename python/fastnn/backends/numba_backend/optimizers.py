"""The optimizer steps: SGD, Adagrad, RMSprop, Adam and AdamW, each one
in-place update of one parameter, following torch.optim's single-tensor code
exactly. `step` counts from 1 and is already incremented by the caller.
The kernels repeat the reference's dtype arithmetic element by element, in
its order and without contraction, so the updates match it to the bit; the
Python scalars arrive converted to the parameter's dtype where NumPy would
convert them. Flat views of param, grad and state.
"""
import math

import numpy as np

from ._common import empty, jit
from ._parallel import threaded

__all__ = ["sgd_step", "adagrad_step", "rmsprop_step", "adam_step"]


@jit
def _sgd_k(p, grad, buf, lr, momentum, damp1m, wd, use_wd, use_mom, nesterov, maximize, first):
    for i in range(p.size):
        g = -grad[i] if maximize else grad[i]
        if use_wd:
            g = g + wd * p[i]
        if use_mom:
            if first:
                b = g
            else:
                b = buf[i] * momentum
                b = b + damp1m * g
            buf[i] = b
            g = g + momentum * b if nesterov else b
        p[i] = p[i] - lr * g


_sgd = threaded(_sgd_k, split=3, align=64)


@jit
def _adagrad_k(p, grad, state_sum, clr, wd, eps, use_wd, maximize):
    for i in range(p.size):
        g = -grad[i] if maximize else grad[i]
        if use_wd:
            g = g + wd * p[i]
        ss = state_sum[i] + g * g
        state_sum[i] = ss
        p[i] = p[i] - clr * g / (np.sqrt(ss) + eps)


_adagrad = threaded(_adagrad_k, split=3, align=64)


@jit
def _rmsprop_k(p, grad, square_avg, grad_avg, buf, lr, alpha, alpha1m, eps, wd, momentum,
               use_wd, centered, use_mom, maximize):
    for i in range(p.size):
        g = -grad[i] if maximize else grad[i]
        if use_wd:
            g = g + wd * p[i]
        sq = square_avg[i] * alpha
        sq = sq + alpha1m * g * g
        square_avg[i] = sq
        if centered:
            ga = grad_avg[i] * alpha
            ga = ga + alpha1m * g
            grad_avg[i] = ga
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if use_mom:
            b = buf[i] * momentum
            b = b + g / avg
            buf[i] = b
            p[i] = p[i] - lr * b
        else:
            p[i] = p[i] - lr * g / avg


_rmsprop = threaded(_rmsprop_k, split=5, align=64)


@jit
def _adam_k(p, grad, exp_avg, exp_avg_sq, step_size, beta1, beta1m, beta2, beta2m, eps,
            sqrt_bc2, wd, decay, use_wd, decoupled, maximize):
    # eps and sqrt_bc2 are float64: in the reference np.sqrt(bias_correction2)
    # is a float64 scalar, so (NumPy 2 promotion) the denominator and the
    # update are float64 before param is cast back to its dtype.
    for i in range(p.size):
        g = -grad[i] if maximize else grad[i]
        pi = p[i]
        if use_wd:
            if decoupled:
                pi = pi * decay
            else:
                g = g + wd * pi
        m = exp_avg[i] * beta1
        m = m + beta1m * g
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2
        v = v + beta2m * g * g
        exp_avg_sq[i] = v
        denom = np.sqrt(v) / sqrt_bc2 + eps
        p[i] = pi - step_size * m / denom


_adam = threaded(_adam_k, split=4, align=64)


def _state(a):
    # A flat view of an array updated in place (a copy would lose the update).
    if not a.flags.c_contiguous:
        raise ValueError("optimizer parameters and state must be C-contiguous")
    return a.reshape(-1)


def sgd_step(param, grad, momentum_buf, lr, momentum=0.0, dampening=0.0,
             nesterov=False, weight_decay=0.0, maximize=False, first_step=True):
    f = param.dtype.type
    use_mom = bool(momentum)
    buf = _state(momentum_buf) if use_mom else empty(param.dtype)
    _sgd("optimizer", _state(param), grad.ravel(), buf, f(lr), f(momentum), f(1 - dampening), f(weight_decay),
         bool(weight_decay), use_mom, bool(nesterov), bool(maximize), bool(first_step))


def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0,
                 weight_decay=0.0, eps=1e-10, maximize=False):
    f = param.dtype.type
    clr = lr / (1 + (step - 1) * lr_decay)
    _adagrad("optimizer", _state(param), grad.ravel(), _state(state_sum), f(clr), f(weight_decay), f(eps),
             bool(weight_decay), bool(maximize))


def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buf, lr=0.01, alpha=0.99,
                 eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    # grad_avg is used only when centered, momentum_buf only when momentum > 0.
    f = param.dtype.type
    use_mom = momentum > 0
    gavg = _state(grad_avg) if centered else empty(param.dtype)
    buf = _state(momentum_buf) if use_mom else empty(param.dtype)
    _rmsprop("optimizer", _state(param), grad.ravel(), _state(square_avg), gavg, buf, f(lr), f(alpha),
             f(1 - alpha), f(eps), f(weight_decay), f(momentum), bool(weight_decay), bool(centered), use_mom,
             bool(maximize))


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, beta1=0.9, beta2=0.999,
              eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, maximize=False):
    # Adam, or AdamW when decoupled_weight_decay (the decay then scales param directly).
    f = param.dtype.type
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    _adam("optimizer", _state(param), grad.ravel(), _state(exp_avg), _state(exp_avg_sq), f(lr / bias_correction1),
          f(beta1), f(1 - beta1), f(beta2), f(1 - beta2), float(eps), math.sqrt(bias_correction2),
          f(weight_decay), f(1 - lr * weight_decay), bool(weight_decay), bool(decoupled_weight_decay),
          bool(maximize))
