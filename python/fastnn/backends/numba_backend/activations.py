"""Softmax and the activations, forward and backward, with the backend's one
activation code table, which linear's fused epilogue and gradient pass use
too."""
import math

import numpy as np

from ._common import FM_SUM, finish, jit, target
from ._parallel import threaded
from .vmath import cst, fmaxnum, vexp, vexpm1, vsigmoid, vtanh

__all__ = ["softmax", "log_softmax", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "relu",
           "relu_backward", "leaky_relu", "leaky_relu_backward", "elu", "elu_backward"]

# ---------------------------------------------------------------- softmax family

@jit(fastmath=FM_SUM)
def _softmax_rows(x, out, log):
    # Per row: max, then exp-sum, then the outputs. out may be x itself; the
    # sums only ever read one array, so they vectorise (in the same order)
    # whether or not out overlaps x.
    n, c = x.shape
    if c == 0:
        return
    for i in range(n):
        m = x[i, 0]
        for j in range(c):
            m = fmaxnum(m, x[i, j])
        s = 0.0
        if log:
            for j in range(c):
                s += vexp(x[i, j] - m)
            lse = x.dtype.type(math.log(s))
            for j in range(c):
                out[i, j] = (x[i, j] - m) - lse
        else:
            for j in range(c):
                out[i, j] = vexp(x[i, j] - m)
            for j in range(c):
                s += out[i, j]
            inv = x.dtype.type(1.0 / s)
            for j in range(c):
                out[i, j] *= inv


_softmax = threaded(_softmax_rows, split=2)


def _softmax_family(x, out, log):
    res = target(out, x)
    _softmax("rows", x, res, log)
    return finish(out, res)


def softmax(x, out=None):
    # (N, C) -> (N, C); subtracting the row max keeps exp() from overflowing.
    return _softmax_family(x, out, False)


def log_softmax(x, out=None):
    # (N, C) -> (N, C); log-sum-exp, never log(softmax) which underflows to -inf.
    return _softmax_family(x, out, True)


# ------------------------------------------------------------------ activations
# Forward takes x; backward takes what the derivative is simplest in
# (the output y for sigmoid/tanh/relu, the input x for leaky_relu/elu) and dy.
# Kernels work on flat views (the arrays are C-contiguous).

# The one activation code table of this backend: the elementwise kernels and
# linear's fused epilogue and gradient pass all branch on these codes.
_A_SIGMOID, _A_TANH, _A_RELU, _A_LEAKY, _A_ELU, _A_NONE = 0, 1, 2, 3, 4, 5
ACTIVATION_CODES = {"sigmoid": _A_SIGMOID, "tanh": _A_TANH, "relu": _A_RELU, "leaky_relu": _A_LEAKY,
                    "elu": _A_ELU, "none": _A_NONE}


# One element of ReLU and of the derivatives from the output y, for the
# kernels below and linear's fused passes (sigmoid and tanh are in vmath).
@jit
def _relu1(v):
    zero = cst(0.0, v)
    return zero if v < zero else v  # NaN passes, as in np.maximum


@jit
def _relu_grad1(y, g):
    return g if y > 0 else cst(0.0, g)


@jit
def _sigmoid_grad1(y, g):
    return g * y * (cst(1.0, y) - y)


@jit
def _tanh_grad1(y, g):
    return g * (cst(1.0, y) - y * y)


@jit
def _act_fwd_k(x, out, code, a):
    # One loop per activation; `a` (slope / alpha) is used in x's dtype.
    af = x.dtype.type(a)
    if code == _A_SIGMOID:
        for i in range(out.size):
            out[i] = vsigmoid(x[i])
    elif code == _A_TANH:
        for i in range(out.size):
            out[i] = vtanh(x[i])
    elif code == _A_RELU:
        for i in range(out.size):
            out[i] = _relu1(x[i])
    elif code == _A_LEAKY:
        for i in range(out.size):
            v = x[i]
            out[i] = v if v > 0 else v * af
    elif code == _A_ELU:
        for i in range(out.size):
            v = x[i]
            out[i] = v if v > 0 else af * vexpm1(v)


_act_fwd = threaded(_act_fwd_k, split=2, align=64)


@jit
def _act_bwd_k(v, dy, out, code, a):
    # v is y (sigmoid, tanh, relu) or x (leaky_relu, elu). The reference's dtype
    # arithmetic in its order, without FMA contraction: bit-identical results.
    af = dy.dtype.type(a)
    if code == _A_SIGMOID:
        for i in range(out.size):
            out[i] = _sigmoid_grad1(v[i], dy[i])
    elif code == _A_TANH:
        for i in range(out.size):
            out[i] = _tanh_grad1(v[i], dy[i])
    elif code == _A_RELU:
        for i in range(out.size):
            out[i] = _relu_grad1(v[i], dy[i])
    elif code == _A_LEAKY:
        for i in range(out.size):
            out[i] = dy[i] if v[i] > 0 else dy[i] * af
    elif code == _A_ELU:
        for i in range(out.size):
            x = v[i]
            out[i] = dy[i] if x > 0 else dy[i] * af * vexp(x)


_act_bwd = threaded(_act_bwd_k, split=3, align=64)


def _act_forward(x, out, code, kind, a=0.0):
    res = np.empty(x.shape, x.dtype) if out is None else target(out, x)
    _act_fwd(kind, x.ravel(), res.ravel(), code, a)
    return res if out is None else finish(out, res)


def _act_backward(v, dy, out, code, kind, a=0.0):
    res = np.empty(dy.shape, dy.dtype) if out is None else target(out, dy)
    _act_bwd(kind, v.ravel(), dy.ravel(), res.ravel(), code, a)
    return res if out is None else finish(out, res)


def sigmoid(x, out=None):
    # Split by sign so that exp() only ever sees non-positive arguments.
    return _act_forward(x, out, _A_SIGMOID, "transcendental")


def sigmoid_backward(y, dy, out=None):
    return _act_backward(y, dy, out, _A_SIGMOID, "elementwise")


def tanh(x, out=None):
    return _act_forward(x, out, _A_TANH, "transcendental")


def tanh_backward(y, dy, out=None):
    return _act_backward(y, dy, out, _A_TANH, "elementwise")


def relu(x, out=None):
    return _act_forward(x, out, _A_RELU, "elementwise")


def relu_backward(y, dy, out=None):
    return _act_backward(y, dy, out, _A_RELU, "elementwise")


def leaky_relu(x, negative_slope=0.01, out=None):
    return _act_forward(x, out, _A_LEAKY, "elementwise", negative_slope)


def leaky_relu_backward(x, dy, negative_slope=0.01, out=None):
    return _act_backward(x, dy, out, _A_LEAKY, "elementwise", negative_slope)


def elu(x, alpha=1.0, out=None):
    return _act_forward(x, out, _A_ELU, "transcendental", alpha)


def elu_backward(x, dy, alpha=1.0, out=None):
    return _act_backward(x, dy, out, _A_ELU, "transcendental", alpha)

