"""Stateless functions: the public kernel API (`import fastnn.functional as F`).

Each function validates its arguments once -- converting lists, integer arrays
and strided views explicitly, refusing what cannot be meant -- and then calls
the same-named kernel of the active backend (cpp, numba or numpy). Errors are
the same for every backend: TypeError for a wrong kind of argument, ValueError
for a wrong shape or value, IndexError for a label out of range.
"""
import numbers

import numpy as np

from . import backends

_FLOAT_TYPES = (np.float32, np.float64)
REDUCTIONS = ("mean", "sum", "none")


# ------------------------------------------------------------------ validation

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


def as_labels(t, name, n_rows, n_classes):
    """Integer class labels (n_rows,) as int64, checked to lie in [0, n_classes)
    (by the backend itself when it checks labels, as _core does, saving two passes)."""
    arr = np.asarray(t)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape ({n_rows},) to match the batch, got {arr.shape}")
    if arr.dtype != np.int64 or not arr.flags.c_contiguous or not arr.flags.aligned:
        arr = np.require(arr, dtype=np.int64, requirements="CA")
    if arr.size and not getattr(backends.active(), "CHECKS_ARGUMENTS", False):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= n_classes:
            bad = lo if lo < 0 else hi
            raise IndexError(f"{name} label {bad} is out of range [0, {n_classes})")
    return arr


def _float_pair(a, b, name_a, name_b):
    """Two float arrays of one shape and one dtype. A non-float b (a list,
    integers) takes a's dtype; two float dtypes meet at the wider one."""
    a = as_float_array(a, name_a)
    b_is_float = isinstance(b, np.ndarray) and b.dtype.kind == "f"
    b = as_float_array(b, name_b, dtype=None if b_is_float else a.dtype)
    if a.dtype != b.dtype:
        common = np.promote_types(a.dtype, b.dtype)
        a, b = a.astype(common), b.astype(common)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")


def _check_number(value, name, low=None, high=None):
    if type(value) is float and (low is None or low <= value) and (high is None or value <= high):
        return value  # the common case, without the slower checks below
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large to be a float: {value}") from None
    if (low is not None and not value >= low) or (high is not None and not value <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _rows(x, name):
    """A 1-D x is a batch of one: returns the 2-D view and whether to squeeze back."""
    if x.ndim == 1:
        return x.reshape(1, -1), True
    if x.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (batch, classes), got shape {x.shape}")
    return x, False


def _nonempty(x, name):
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}): a loss over no elements is undefined")


def _out(out, shape, dtype, name="out", inputs=(), in_place_ok=False):
    """A caller's output buffer, checked to be exactly what the kernel writes
    and not to overlap the inputs (elementwise kernels may write in place)."""
    if out is None:
        return None
    if type(out) is not np.ndarray:
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.dtype != dtype or out.shape != tuple(shape):
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)} and shape {tuple(shape)}, "
                         f"got {out.dtype} {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be a writeable C-contiguous array")
    for x in inputs:
        if np.may_share_memory(out, x):
            same = in_place_ok and out.__array_interface__["data"][0] == x.__array_interface__["data"][0] \
                and out.nbytes == x.nbytes
            if not same:
                raise ValueError(f"{name} must not share memory with an input"
                                 + (" (other than being that input itself)" if in_place_ok else ""))
    return out


# -------------------------------------------------------------- softmax family

def _rowwise(kernel, x, out):
    x = as_float_array(x, "x")
    rows, squeeze = _rows(x, "x")
    out = _out(out, x.shape, x.dtype, inputs=(x,), in_place_ok=True)
    if rows.shape[1] == 0:
        return np.empty_like(x) if out is None else out
    y = getattr(backends.active(), kernel)(rows, out=None if out is None else out.reshape(rows.shape))
    return out if out is not None else (y.reshape(x.shape) if squeeze else y)


def softmax(x, out=None):
    """Softmax over the last axis of a 1-D or 2-D x."""
    return _rowwise("softmax", x, out)


def log_softmax(x, out=None):
    """log(softmax(x)) over the last axis, computed stably by log-sum-exp."""
    return _rowwise("log_softmax", x, out)


# ----------------------------------------------------------------- activations

def _elementwise(kernel, x, out, *params):
    x = as_float_array(x, "x")
    return getattr(backends.active(), kernel)(x, *params, out=_out(out, x.shape, x.dtype, inputs=(x,),
                                                                  in_place_ok=True))


def sigmoid(x, out=None):
    return _elementwise("sigmoid", x, out)


def tanh(x, out=None):
    return _elementwise("tanh", x, out)


def relu(x, out=None):
    return _elementwise("relu", x, out)


def leaky_relu(x, negative_slope=0.01, out=None):
    return _elementwise("leaky_relu", x, out, _check_number(negative_slope, "negative_slope"))


def elu(x, alpha=1.0, out=None):
    return _elementwise("elu", x, out, _check_number(alpha, "alpha"))


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
    return _elementwise_backward("leaky_relu_backward", x, "x", dy, _check_number(negative_slope, "negative_slope"))


def elu_backward(x, dy, alpha=1.0):
    """dL/dx of elu, from the input x."""
    return _elementwise_backward("elu_backward", x, "x", dy, _check_number(alpha, "alpha"))


# ---------------------------------------------------------------------- losses

def sum_squared_error(y, t):
    """0.5 * sum((y - t)**2), the textbook's SSE."""
    y, t = _float_pair(y, t, "y", "t")
    return backends.active().sum_squared_error(y, t)


def sum_squared_error_backward(y, t):
    y, t = _float_pair(y, t, "y", "t")
    return backends.active().sum_squared_error_backward(y, t)


def mean_squared_error(y, t, reduction="mean"):
    """mean((y - t)**2) over all elements (or their sum, or each one)."""
    _check_reduction(reduction)
    y, t = _float_pair(y, t, "y", "t")
    if reduction == "mean":
        _nonempty(y, "y")
    return backends.active().mean_squared_error(y, t, reduction)


def mean_squared_error_backward(y, t, reduction="mean"):
    _check_reduction(reduction)
    y, t = _float_pair(y, t, "y", "t")
    return backends.active().mean_squared_error_backward(y, t, reduction)


def _probabilities_and_target(y, t, name_y="y", name_t="t"):
    """y (N, C) floats (1-D: a batch of one); t labels (N,) or one-hot/probabilities (N, C)."""
    y = as_float_array(y, name_y)
    y, squeeze = _rows(y, name_y)
    _nonempty(y, name_y)
    t_arr = np.asarray(t)
    if t_arr.dtype.kind in "iu" and t_arr.ndim <= 1 and (t_arr.ndim == 0 or t_arr.shape[0] == y.shape[0]):
        return y, as_labels(t_arr.reshape(-1), name_t, y.shape[0], y.shape[1]), squeeze
    t_f = as_float_array(t_arr, name_t, dtype=y.dtype)
    if squeeze and t_f.ndim == 1:
        t_f = t_f.reshape(1, -1)
    if t_f.shape != y.shape:
        raise ValueError(f"{name_t} must be labels of shape ({y.shape[0]},) or probabilities of shape {y.shape}, "
                         f"got shape {t_f.shape}")
    return y, t_f, squeeze


def cross_entropy_error(y, t):
    """Textbook CE on probabilities: -sum(t * log(y + 1e-7)) / batch; t one-hot or labels."""
    y, t, _ = _probabilities_and_target(y, t)
    return backends.active().cross_entropy_error(y, t)


def cross_entropy_error_backward(y, t):
    y2, t, squeeze = _probabilities_and_target(y, t)
    dy = backends.active().cross_entropy_error_backward(y2, t)
    return dy.reshape(-1) if squeeze else dy


def _logits_target(logits, target, reduction, label_smoothing):
    _check_reduction(reduction)
    label_smoothing = _check_number(label_smoothing, "label_smoothing", 0.0, 1.0)
    logits, target, squeeze = _probabilities_and_target(logits, target, "logits", "target")
    return logits, target, label_smoothing, squeeze


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy: from logits (N, C) or (C,), stable;
    target integer labels (N,) or class probabilities (N, C)."""
    logits, target, label_smoothing, squeeze = _logits_target(logits, target, reduction, label_smoothing)
    loss = backends.active().cross_entropy(logits, target, reduction, label_smoothing)
    return loss[0] if squeeze and reduction == "none" else loss


def softmax_cross_entropy(logits, target, reduction="mean", label_smoothing=0.0, out=None):
    """(loss, dlogits): cross_entropy and its gradient with respect to the
    logits, in one pass ('none': the gradient of the summed row losses)."""
    backend = backends.active()
    if type(label_smoothing) is float and getattr(backend, "CHECKS_ARGUMENTS", False):
        # On a backend that checks its arguments itself, plain arrays go straight
        # to it: at 128x10 any check here would cost as much as the kernel.
        # What the backend refuses (lists, other dtypes, 1-D logits, bad labels,
        # an empty batch's mean) goes through the checks below, which convert it
        # or name the fault.
        try:
            return backend.softmax_cross_entropy(logits, target, reduction, label_smoothing, out)
        except (TypeError, ValueError, IndexError):
            pass
    logits2, target, label_smoothing, squeeze = _logits_target(logits, target, reduction, label_smoothing)
    shape = logits2.shape[1:] if squeeze else logits2.shape
    out = _out(out, shape, logits2.dtype, inputs=(logits2, target))
    loss, dlogits = backends.active().softmax_cross_entropy(
        logits2, target, reduction, label_smoothing, out=None if out is None else out.reshape(logits2.shape))
    if out is not None:
        dlogits = out
    elif squeeze:
        dlogits = dlogits.reshape(-1)
    return (loss[0] if squeeze and reduction == "none" else loss), dlogits


def binary_cross_entropy(p, t, reduction="mean"):
    """torch's BCE on probabilities p in [0, 1] (each log clamped at -100)."""
    _check_reduction(reduction)
    p, t = _float_pair(p, t, "p", "t")
    if reduction == "mean":
        _nonempty(p, "p")
    return backends.active().binary_cross_entropy(p, t, reduction)


def binary_cross_entropy_backward(p, t, reduction="mean"):
    _check_reduction(reduction)
    p, t = _float_pair(p, t, "p", "t")
    return backends.active().binary_cross_entropy_backward(p, t, reduction)


def binary_cross_entropy_with_logits(z, t, reduction="mean"):
    """BCE on logits z, stable for any z: max(z, 0) - z t + log(1 + exp(-|z|))."""
    _check_reduction(reduction)
    z, t = _float_pair(z, t, "z", "t")
    if reduction == "mean":
        _nonempty(z, "z")
    return backends.active().binary_cross_entropy_with_logits(z, t, reduction)


def binary_cross_entropy_with_logits_backward(z, t, reduction="mean"):
    _check_reduction(reduction)
    z, t = _float_pair(z, t, "z", "t")
    return backends.active().binary_cross_entropy_with_logits_backward(z, t, reduction)


# ---------------------------------------------------------------------- linear

def _matrix(x, name, dtype=None):
    x = as_float_array(x, name, dtype)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    return x


def matmul(a, b, trans_a=False, trans_b=False, out=None):
    """op(a) @ op(b) for 2-D a and b; op transposes when asked (reading the
    operand in its own layout, without a transposed copy)."""
    for name, flag in (("trans_a", trans_a), ("trans_b", trans_b)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    trans_a, trans_b = bool(trans_a), bool(trans_b)
    a = _matrix(a, "a")
    b = _matrix(b, "b", a.dtype)
    m, k = (a.shape[::-1] if trans_a else a.shape)
    kb, n = (b.shape[::-1] if trans_b else b.shape)
    if k != kb:
        raise ValueError(f"matmul: inner dimensions differ: op(a) is ({m}, {k}) and op(b) is ({kb}, {n})")
    return backends.active().matmul(a, b, trans_a, trans_b, out=_out(out, (m, n), a.dtype, inputs=(a, b)))


def _activation(activation, what="activation"):
    if activation is None:
        return "none"
    if activation not in backends.active().FUSED_ACTIVATIONS:
        raise ValueError(f"{what} must be one of {backends.active().FUSED_ACTIVATIONS}, got {activation!r}")
    return activation


def _linear_operands(x, W, b):
    x = _matrix(x, "x")
    W = _matrix(W, "W", x.dtype)
    if x.shape[1] != W.shape[0]:
        raise ValueError(f"x has {x.shape[1]} features but W has shape {W.shape} (W is (in_features, out_features))")
    if b is not None:
        b = as_float_array(b, "b", x.dtype)
        if b.shape != (W.shape[1],):
            raise ValueError(f"b must have shape ({W.shape[1]},), got {b.shape}")
    return x, W, b


def linear(x, W, b=None, activation="none", out=None):
    """act(x @ W + b) with W of shape (in_features, out_features); the bias
    and activation ('none', 'relu', 'sigmoid', 'tanh') are fused into the GEMM."""
    x, W, b = _linear_operands(x, W, b)
    activation = _activation(activation)
    inputs = (x, W) if b is None else (x, W, b)
    return backends.active().linear(x, W, b, activation,
                                    out=_out(out, (x.shape[0], W.shape[1]), x.dtype, inputs=inputs))


def linear_backward(x, W, dy, y=None, activation="none", need_dx=True, x_activation="none"):
    """(dx, dW, db) of y = act(x @ W + b), given dy = dL/dy and, when an
    activation was fused, its output y. dx is None when need_dx is False.
    With x_activation, x is that activation's output and dx is returned
    through it: dL/d(its input), which the layer before needs."""
    x, W, _ = _linear_operands(x, W, None)
    activation = _activation(activation)
    x_activation = _activation(x_activation, "x_activation")
    shape = (x.shape[0], W.shape[1])
    dy = as_float_array(dy, "dy", x.dtype)
    if dy.shape != shape:
        raise ValueError(f"dy must have shape {shape}, got {dy.shape}")
    if activation != "none":
        if y is None:
            raise ValueError(f"y (the activation's output) is required when activation is {activation!r}")
        y = as_float_array(y, "y", x.dtype)
        if y.shape != shape:
            raise ValueError(f"y must have shape {shape}, got {y.shape}")
    return backends.active().linear_backward(x, W, dy, y, activation, bool(need_dx), x_activation=x_activation)


def gather_rows(x, index, out=None):
    """x[index] for a 1-D integer index: one mini-batch, gathered in parallel."""
    if type(x) is not np.ndarray:
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.dtype.hasobject:
        raise TypeError(f"x must hold plain numbers, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError("x must have at least one dimension")
    x = np.require(x, requirements="CA")
    index = np.asarray(index)
    if index.dtype.kind not in "iu" or index.ndim != 1:
        raise TypeError(f"index must be a 1-D integer array, got dtype {index.dtype} and shape {index.shape}")
    index = np.require(index, dtype=np.int64, requirements="CA")
    if index.size and (index.min() < 0 or index.max() >= x.shape[0]):
        raise IndexError(f"index out of range for x with {x.shape[0]} rows")
    out = _out(out, (index.shape[0],) + x.shape[1:], x.dtype, inputs=(x, index))
    return backends.active().gather_rows(x, index, out=out)
