"""Stateless functions: the public kernel API (`import fastnn.functional as F`).

Each function converts its arguments explicitly -- lists, integer and bool
arrays, strided views, a 1-D batch of one -- and calls the same-named kernel
of the active backend (cpp, numba or numpy), which checks them: _core in C++,
the numpy and numba backends through fastnn.backends.checks, with the same
messages. Errors are the same for every backend: TypeError for a wrong kind of
argument, ValueError for a wrong shape or value, IndexError for a label out of
range.

Weights follow the textbook's Affine layer: `linear(x, W)` is x @ W with W of
shape (in_features, out_features), the transpose of torch.nn.functional.linear's
(out_features, in_features) weight (see nn.Linear.from_torch / to_torch).
"""
import numbers

import numpy as np

from . import backends

__all__ = ["softmax", "log_softmax", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
           "sigmoid_backward", "tanh_backward", "relu_backward", "leaky_relu_backward", "elu_backward",
           "sum_squared_error", "sum_squared_error_backward", "mean_squared_error", "mean_squared_error_backward",
           "cross_entropy_error", "cross_entropy_error_backward", "cross_entropy", "softmax_cross_entropy",
           "binary_cross_entropy", "binary_cross_entropy_backward", "binary_cross_entropy_with_logits",
           "binary_cross_entropy_with_logits_backward", "matmul", "linear", "linear_backward", "gather_rows",
           "as_float_array", "as_labels", "REDUCTIONS"]

_FLOAT_TYPES = (np.float32, np.float64)
REDUCTIONS = ("mean", "sum", "none")


# ------------------------------------------------------------------ conversion

def as_float_array(x, name, dtype=None):
    """x as a C-contiguous float32/float64 array, converting explicitly:
    float32/float64 stay as they are (other floats go to float32, integers and
    bools to float64, as NumPy would compute them); a strided view is copied
    once. With `dtype`, the result has that dtype."""
    if type(x) is np.ndarray and x.dtype.type in _FLOAT_TYPES and x.flags.c_contiguous and x.flags.aligned \
            and (dtype is None or x.dtype == dtype) and x.dtype.isnative:
        return x  # the fast path: nothing to do
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array of numbers: {exc}") from None
    kind = arr.dtype.kind
    if dtype is None:
        if kind == "f":
            dtype = np.float64 if arr.dtype.itemsize >= 8 else np.float32
        elif kind in "iub":
            dtype = np.float64
        else:
            raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    elif kind not in "fiub":
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    return np.require(arr, dtype=dtype, requirements="CA")


def as_labels(t, name):
    """Integer class labels as a C-contiguous int64 array (the backend checks
    their shape and range)."""
    arr = np.asarray(t)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise IndexError(f"{name} label {int(arr.max())} is out of range")
    if arr.dtype != np.int64 or not arr.flags.c_contiguous or not arr.flags.aligned:
        arr = np.require(arr, dtype=np.int64, requirements="CA")
    return arr


def _float_pair(a, b, name_a, name_b):
    """Two float arrays of one dtype. A non-float b (a list, integers) takes
    a's dtype; two float dtypes meet at the wider one."""
    a = as_float_array(a, name_a)
    b_is_float = isinstance(b, np.ndarray) and b.dtype.kind == "f"
    b = as_float_array(b, name_b, dtype=None if b_is_float else a.dtype)
    if a.dtype != b.dtype:
        common = np.promote_types(a.dtype, b.dtype)
        a, b = a.astype(common), b.astype(common)
    return a, b


def _number(value, name):
    """A real scalar as a float (the backend checks its range)."""
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large to be a float: {value}") from None


def _rows(x):
    """A 1-D x is a batch of one: returns the 2-D view and whether to squeeze back."""
    if x.ndim == 1:
        return x.reshape(1, -1), True
    return x, False


def _like(out, shape):
    """The caller's out viewed in `shape` (a batch of one), when it can be."""
    if isinstance(out, np.ndarray) and out.size == int(np.prod(shape)) and out.flags.c_contiguous:
        return out.reshape(shape)
    return out


# -------------------------------------------------------------- softmax family

def _rowwise(kernel, x, out):
    x = as_float_array(x, "x")
    rows, squeeze = _rows(x)
    y = getattr(backends.active(), kernel)(rows, out=_like(out, rows.shape) if squeeze else out)
    return out if out is not None else (y.reshape(x.shape) if squeeze else y)


def softmax(x, out=None):
    """Softmax over the last axis of a 1-D or 2-D x."""
    return _rowwise("softmax", x, out)


def log_softmax(x, out=None):
    """log(softmax(x)) over the last axis, computed stably by log-sum-exp."""
    return _rowwise("log_softmax", x, out)


# ----------------------------------------------------------------- activations

def _elementwise(kernel, x, out, *params):
    return getattr(backends.active(), kernel)(as_float_array(x, "x"), *params, out=out)


def sigmoid(x, out=None):
    return _elementwise("sigmoid", x, out)


def tanh(x, out=None):
    return _elementwise("tanh", x, out)


def relu(x, out=None):
    return _elementwise("relu", x, out)


def leaky_relu(x, negative_slope=0.01, out=None):
    return _elementwise("leaky_relu", x, out, _number(negative_slope, "negative_slope"))


def elu(x, alpha=1.0, out=None):
    return _elementwise("elu", x, out, _number(alpha, "alpha"))


def _elementwise_backward(kernel, saved, saved_name, dy, *params):
    saved, dy = _float_pair(saved, dy, saved_name, "dy")
    return getattr(backends.active(), kernel)(saved, dy, *params)


def sigmoid_backward(y, dy):
    """dL/dx of y = sigmoid(x), from the output y."""
    return _elementwise_backward("sigmoid_backward", y, "y", dy)


def tanh_backward(y, dy):
    """dL/dx of y = tanh(x), from the output y."""
    return _elementwise_backward("tanh_backward", y, "y", dy)


def relu_backward(y, dy):
    """dL/dx of y = relu(x), from the output y."""
    return _elementwise_backward("relu_backward", y, "y", dy)


def leaky_relu_backward(x, dy, negative_slope=0.01):
    """dL/dx of leaky_relu, from the input x."""
    return _elementwise_backward("leaky_relu_backward", x, "x", dy, _number(negative_slope, "negative_slope"))


def elu_backward(x, dy, alpha=1.0):
    """dL/dx of elu, from the input x."""
    return _elementwise_backward("elu_backward", x, "x", dy, _number(alpha, "alpha"))


# ---------------------------------------------------------------------- losses

def sum_squared_error(y, t):
    """0.5 * sum((y - t)**2), the textbook's SSE."""
    return backends.active().sum_squared_error(*_float_pair(y, t, "y", "t"))


def sum_squared_error_backward(y, t):
    return backends.active().sum_squared_error_backward(*_float_pair(y, t, "y", "t"))


def mean_squared_error(y, t, reduction="mean"):
    """mean((y - t)**2) over all elements (or their sum, or each one)."""
    return backends.active().mean_squared_error(*_float_pair(y, t, "y", "t"), reduction)


def mean_squared_error_backward(y, t, reduction="mean"):
    return backends.active().mean_squared_error_backward(*_float_pair(y, t, "y", "t"), reduction)


def _prediction_and_target(y, t, name_y="y", name_t="t"):
    """y (N, C) floats (1-D: a batch of one); t integer labels (N,), or
    one-hot / probabilities (N, C) in y's dtype."""
    y, squeeze = _rows(as_float_array(y, name_y))
    if type(t) is np.ndarray and t.dtype == np.int64 and t.ndim == 1 and t.flags.c_contiguous:
        return y, t, squeeze  # the fast path: labels as the backend takes them
    t_arr = np.asarray(t)
    if t_arr.dtype.kind in "iu" and t_arr.ndim <= 1 and not (squeeze and t_arr.ndim == 1 and t_arr.size > 1):
        return y, as_labels(t_arr.reshape(-1), name_t), squeeze
    t_f = as_float_array(t_arr, name_t, dtype=y.dtype)
    if squeeze and t_f.ndim == 1:
        t_f = t_f.reshape(1, -1)
    if t_f.ndim != 2:  # the backend would read a 1-D float target as labels of the wrong dtype
        raise ValueError(f"{name_t} must be integer labels of shape ({y.shape[0]},) or probabilities of shape "
                         f"{y.shape}, got {t_f.dtype} of shape {t_f.shape}")
    return y, t_f, squeeze


def cross_entropy_error(y, t):
    """Textbook CE on probabilities: -sum(t * log(y + 1e-7)) / batch; t one-hot or labels."""
    y, t, _ = _prediction_and_target(y, t)
    return backends.active().cross_entropy_error(y, t)


def cross_entropy_error_backward(y, t):
    y2, t, squeeze = _prediction_and_target(y, t)
    dy = backends.active().cross_entropy_error_backward(y2, t)
    return dy.reshape(-1) if squeeze else dy


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy: from logits (N, C) or (C,), stable;
    target integer labels (N,) or class probabilities (N, C)."""
    logits, target, squeeze = _prediction_and_target(logits, target, "logits", "target")
    loss = backends.active().cross_entropy(logits, target, reduction, _number(label_smoothing, "label_smoothing"))
    return loss[0] if squeeze and reduction == "none" else loss


def softmax_cross_entropy(logits, target, reduction="mean", label_smoothing=0.0, out=None):
    """(loss, dlogits): cross_entropy and its gradient with respect to the
    logits, in one pass ('none': the gradient of the summed row losses)."""
    logits, target, squeeze = _prediction_and_target(logits, target, "logits", "target")
    loss, dlogits = backends.active().softmax_cross_entropy(
        logits, target, reduction, _number(label_smoothing, "label_smoothing"),
        _like(out, logits.shape) if squeeze else out)
    if squeeze:
        return (loss[0] if reduction == "none" else loss), (out if out is not None else dlogits.reshape(-1))
    return loss, dlogits


def binary_cross_entropy(p, t, reduction="mean"):
    """torch's BCE on probabilities p in [0, 1] (each log clamped at -100)."""
    return backends.active().binary_cross_entropy(*_float_pair(p, t, "p", "t"), reduction)


def binary_cross_entropy_backward(p, t, reduction="mean"):
    return backends.active().binary_cross_entropy_backward(*_float_pair(p, t, "p", "t"), reduction)


def binary_cross_entropy_with_logits(z, t, reduction="mean"):
    """BCE on logits z, stable for any z: max(z, 0) - z t + log(1 + exp(-|z|))."""
    return backends.active().binary_cross_entropy_with_logits(*_float_pair(z, t, "z", "t"), reduction)


def binary_cross_entropy_with_logits_backward(z, t, reduction="mean"):
    return backends.active().binary_cross_entropy_with_logits_backward(*_float_pair(z, t, "z", "t"), reduction)


# ---------------------------------------------------------------------- linear

def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def matmul(a, b, trans_a=False, trans_b=False, out=None):
    """op(a) @ op(b) for 2-D a and b; op transposes when asked (reading the
    operand in its own layout, without a transposed copy)."""
    trans_a, trans_b = _flag(trans_a, "trans_a"), _flag(trans_b, "trans_b")
    a = as_float_array(a, "a")
    return backends.active().matmul(a, as_float_array(b, "b", a.dtype), trans_a, trans_b, out=out)


def _activation(activation, name="activation"):
    if activation is None:
        return "none"
    if not isinstance(activation, str):  # pybind11 would take bytes as a str
        raise TypeError(f"{name} must be a str, got {type(activation).__name__}")
    return activation


def linear(x, W, b=None, activation="none", out=None):
    """act(x @ W + b), the textbook's Affine layer: x (N, in_features), W
    (in_features, out_features), b (out_features,). torch.nn.functional.linear
    takes its weight as (out_features, in_features) and computes x @ W.T: pass
    W.T of a torch weight here (nn.Linear.from_torch does that for a layer).
    The bias and activation ('none', 'relu', 'sigmoid', 'tanh') are fused into
    the GEMM."""
    x = as_float_array(x, "x")
    W = as_float_array(W, "W", x.dtype)
    b = None if b is None else as_float_array(b, "b", x.dtype)
    return backends.active().linear(x, W, b, _activation(activation), out=out)


def linear_backward(x, W, dy, y=None, activation="none", need_dx=True, x_activation="none"):
    """(dx, dW, db) of y = act(x @ W + b), W of shape (in_features,
    out_features), given dy = dL/dy and, when an activation was fused, its
    output y. dx is None when need_dx is False. With x_activation, x is that
    activation's output and dx is returned through it: dL/d(its input), which
    the layer before needs."""
    x = as_float_array(x, "x")
    W = as_float_array(W, "W", x.dtype)
    dy = as_float_array(dy, "dy", x.dtype)
    y = None if y is None else as_float_array(y, "y", x.dtype)
    return backends.active().linear_backward(x, W, dy, y, _activation(activation), bool(need_dx),
                                             x_activation=_activation(x_activation, "x_activation"))


def gather_rows(x, index, out=None):
    """x[index] for a 1-D integer index: one mini-batch, gathered in parallel."""
    if type(x) is not np.ndarray:
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if not x.dtype.hasobject:
        x = np.require(x, requirements="CA")
    index = np.asarray(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"index must be a 1-D integer array, got dtype {index.dtype} and shape {index.shape}")
    if index.dtype.kind == "u" and index.size and index.max() > np.iinfo(np.int64).max:
        raise IndexError(f"index out of range for x with {x.shape[0] if x.ndim else 0} rows")
    return backends.active().gather_rows(x, np.require(index, dtype=np.int64, requirements="CA"), out=out)
