"""The argument checks of the numpy and numba backends: what fastnn._core checks
in C++ (src/cpp/bindings.cpp), with the same exceptions and the same messages.

`checked(module)` returns the backend with every kernel behind its check, so
that fastnn.functional, nn, optim and train get one behaviour on every
backend; the kernels themselves may then assume C-contiguous float32/float64
arrays of agreeing shapes and one dtype, and int64 labels in range. One check
per kernel below, with the kernel's own signature.
"""
import functools
import types

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INT64 = np.dtype(np.int64)
ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")
REDUCTIONS = ("mean", "sum", "none")
# The elementwise activations of every backend: name -> (what name_backward
# takes, the output "y" or the input "x"; (parameter, default) or None). Each
# backend has name(x, [parameter,] out=None) and name_backward(saved, dy,
# [parameter,] out=None); their checks, the cpp backend's entry points and the
# tests' cases come from this list.
ELEMENTWISE_ACTIVATIONS = {"sigmoid": ("y", None), "tanh": ("y", None), "relu": ("y", None),
                           "leaky_relu": ("x", ("negative_slope", 0.01)), "elu": ("x", ("alpha", 1.0))}


# ------------------------------------------------------------------ primitives

def _array(a, name):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")


def _contiguous(a, name):
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; got a strided view of shape {a.shape} "
                         f"(pass np.ascontiguousarray({name}))")
    if not a.flags.aligned:
        raise ValueError(f"{name} must be aligned to its element size; got a misaligned buffer "
                         f"(pass np.require({name}, requirements='CA'))")


def _float_input(a, name, like=None, like_name=""):
    """A float32/float64 input, C-contiguous, and of `like`'s dtype when given."""
    _array(a, name)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 array (native byte order), got dtype {a.dtype}")
    _contiguous(a, name)
    if like is not None and a.dtype != like.dtype:
        raise TypeError(f"{name} must have the same dtype as {like_name} ({like.dtype}), got {a.dtype}")


def _ndim(a, n, name):
    if a.ndim != n:
        raise ValueError(f"{name} must be {n}-D, got shape {a.shape}")


def _shape(a, expected, name):
    if a.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {a.shape}")


def _same_shape(a, b, name_a, name_b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")


def _overlaps(a, b):
    return a.nbytes > 0 and b.nbytes > 0 and np.may_share_memory(a, b)


def _same_memory(a, b):
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.nbytes == b.nbytes


def _output(out, name, like, expected, inputs=(), in_place_ok=False):
    """An output buffer: like's dtype, the expected shape, writeable, and not
    overlapping an input (elementwise kernels may write into an input itself)."""
    if out is None:
        return
    _float_input(out, name, like, "the inputs")
    _shape(out, expected, name)
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    for a in inputs:
        if a is None or not _overlaps(out, a):
            continue
        if in_place_ok and _same_memory(out, a):
            continue
        raise ValueError(f"{name} must be an input itself or not share memory with any input" if in_place_ok
                         else f"{name} must not share memory with an input of this kernel")


def _real(value, name):
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None


def _activation(name, what="activation"):
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    try:
        name.encode()
    except UnicodeEncodeError:  # as pybind11 refuses it on the way to _core
        raise TypeError(f"{what} must be a str that encodes as UTF-8, got {name!r}") from None
    if name not in ACTIVATIONS:
        raise ValueError(f"{what} must be one of 'none', 'relu', 'sigmoid', 'tanh', got '{name}'")


def check_reduction(value):
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {value!r}")


def check_nonempty(a, name):
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}): a loss over no elements is undefined")


def _labels(t, rows, classes, name):
    if t.dtype != INT64:
        raise TypeError(f"{name} labels must be int64, got dtype {t.dtype}")
    _contiguous(t, name)
    _shape(t, (rows,), name)
    if t.size:
        bad = np.flatnonzero((t < 0) | (t >= classes))
        if bad.size:
            i = int(bad[0])
            raise IndexError(f"{name} label {int(t[i])} at position {i} is out of range [0, {classes})")


def _target(t, pred, name):
    """int64 labels (rows,) or a float array shaped like pred; returns whether labels."""
    _array(t, name)
    if t.ndim == 1:
        _labels(t, pred.shape[0], pred.shape[1], name)
        return True
    _float_input(t, name, pred, "the prediction")
    _shape(t, pred.shape, name)
    return False


def _rows(x, name):
    _float_input(x, name)
    _ndim(x, 2, name)


# ------------------------------------------------------------- kernel checks

def softmax(x, out=None):
    _rows(x, "x")
    _output(out, "out", x, x.shape, (x,), in_place_ok=True)


log_softmax = softmax


def _activation_checks(saved_name, parameter):
    """(check of name(x, [parameter,] out=None), check of name_backward(saved, dy, [parameter,] out=None)),
    the arguments positional or by keyword as the kernels take them."""

    def parameter_and_out(args, kwargs):
        rest = list(args)
        if parameter:
            name, default = parameter
            _real(rest.pop(0) if rest else kwargs.get(name, default), name)
        return rest[0] if rest else kwargs.get("out")

    def forward(x, *args, **kwargs):
        out = parameter_and_out(args, kwargs)
        _float_input(x, "x")
        _output(out, "out", x, x.shape, (x,), in_place_ok=True)

    def backward(saved, dy, *args, **kwargs):
        out = parameter_and_out(args, kwargs)
        _float_input(saved, saved_name)
        _float_input(dy, "dy", saved, saved_name)
        _same_shape(saved, dy, saved_name, "dy")
        _output(out, "out", dy, dy.shape, (saved, dy), in_place_ok=True)
    return forward, backward


for _name, (_saved, _parameter) in ELEMENTWISE_ACTIVATIONS.items():
    globals()[_name], globals()[_name + "_backward"] = _activation_checks(_saved, _parameter)
del _name, _saved, _parameter


def _pair(pred, pred_name, t):
    _float_input(pred, pred_name)
    _float_input(t, "t", pred, pred_name)
    _same_shape(pred, t, pred_name, "t")


def sum_squared_error(y, t):
    _pair(y, "y", t)


sum_squared_error_backward = sum_squared_error


def _reduced_pair(pred, pred_name, t, reduction_):
    check_reduction(reduction_)
    _pair(pred, pred_name, t)
    if reduction_ == "mean":
        check_nonempty(pred, pred_name)


def mean_squared_error(y, t, reduction="mean"):
    _reduced_pair(y, "y", t, reduction)


def mean_squared_error_backward(y, t, reduction="mean"):
    check_reduction(reduction)
    _pair(y, "y", t)


def binary_cross_entropy(p, t, reduction="mean"):
    _reduced_pair(p, "p", t, reduction)


def binary_cross_entropy_backward(p, t, reduction="mean"):
    check_reduction(reduction)
    _pair(p, "p", t)


def binary_cross_entropy_with_logits(z, t, reduction="mean"):
    _reduced_pair(z, "z", t, reduction)


def binary_cross_entropy_with_logits_backward(z, t, reduction="mean"):
    check_reduction(reduction)
    _pair(z, "z", t)


def cross_entropy_error(y, t):
    _rows(y, "y")
    check_nonempty(y, "y")
    _target(t, y, "t")


cross_entropy_error_backward = cross_entropy_error


def _logits_target(logits, target_, reduction_, label_smoothing):
    check_reduction(reduction_)
    _rows(logits, "logits")
    if logits.shape[0] == 0:
        raise ValueError("logits has no rows: a loss over no elements is undefined")
    if logits.shape[1] == 0:
        raise ValueError(f"logits must have at least one class, got shape {logits.shape}")
    _target(target_, logits, "target")
    smoothing = _real(label_smoothing, "label_smoothing")
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {smoothing:f}")


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    _logits_target(logits, target, reduction, label_smoothing)


def softmax_cross_entropy(logits, target, reduction="mean", label_smoothing=0.0, out=None):
    _logits_target(logits, target, reduction, label_smoothing)
    _output(out, "out", logits, logits.shape, (logits, target))


def matmul(a, b, trans_a=False, trans_b=False, out=None):
    _float_input(a, "a")
    _float_input(b, "b", a, "a")
    _ndim(a, 2, "a")
    _ndim(b, 2, "b")
    m, k = a.shape[::-1] if trans_a else a.shape
    kb, n = b.shape[::-1] if trans_b else b.shape
    if k != kb:
        raise ValueError(f"matmul: inner dimensions differ: op(a) is ({m}, {k}) and op(b) is ({kb}, {n})")
    _output(out, "out", a, (m, n), (a, b))


def _linear_operands(x, W):
    _float_input(x, "x")
    _float_input(W, "W", x, "x")
    _ndim(x, 2, "x")
    _ndim(W, 2, "W")
    if x.shape[1] != W.shape[0]:
        raise ValueError(f"x has {x.shape[1]} features but W has shape {W.shape} "
                         "(W must be (in_features, out_features))")


def linear(x, W, b=None, activation="none", out=None):
    _linear_operands(x, W)
    if b is not None:
        _float_input(b, "b", x, "x")
        _shape(b, (W.shape[1],), "b")
    _activation(activation)
    _output(out, "out", x, (x.shape[0], W.shape[1]), (x, W, b))


def linear_backward(x, W, dy, y=None, activation="none", need_dx=True,
                    dx_out=None, dW_out=None, db_out=None, x_activation="none"):
    _linear_operands(x, W)
    rows, n_in, n_out = x.shape[0], x.shape[1], W.shape[1]
    _float_input(dy, "dy", x, "x")
    _shape(dy, (rows, n_out), "dy")
    _activation(activation)
    _activation(x_activation, "x_activation")
    if activation != "none":
        if y is None:
            raise ValueError(f"y (the activation's output) is required when activation is '{activation}'")
        _float_input(y, "y", x, "x")
        _shape(y, (rows, n_out), "y")
    _output(dW_out, "dW_out", x, (n_in, n_out), (x, W, dy, y))
    _output(db_out, "db_out", x, (n_out,), (x, W, dy, y, dW_out))
    if need_dx:
        _output(dx_out, "dx_out", x, (rows, n_in), (x, W, dy, y, dW_out, db_out))


dense_linear = linear
dense_linear_backward = linear_backward


def _rows_and_index(x, index):
    _array(x, "x")
    if x.dtype.hasobject:
        raise TypeError(f"x must hold plain numbers, got dtype {x.dtype}")
    _contiguous(x, "x")
    if x.ndim < 1:
        raise ValueError("x must have at least 1 dimension, got a 0-D array")
    _array(index, "index")
    if index.dtype != INT64:
        raise TypeError(f"index must be int64, got dtype {index.dtype}")
    _contiguous(index, "index")
    _ndim(index, 1, "index")
    if index.size:
        bad = np.flatnonzero((index < 0) | (index >= x.shape[0]))
        if bad.size:
            i = int(bad[0])
            raise IndexError(f"index {int(index[i])} at position {i} is out of range for x with {x.shape[0]} rows")


def gather_rows(x, index, out=None):
    _rows_and_index(x, index)
    if out is None:
        return
    _array(out, "out")
    if out.dtype != x.dtype:
        raise TypeError(f"out must have x's dtype {x.dtype}, got {out.dtype}")
    _contiguous(out, "out")
    _shape(out, (index.shape[0],) + x.shape[1:], "out")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    if _overlaps(out, x) or _overlaps(out, index):
        raise ValueError("out must not share memory with x or index")


def prefetch_rows(x, index):
    _rows_and_index(x, index)


def _param_and_state(param, grad, *state):
    _float_input(param, "param")
    if not param.flags.writeable:
        raise ValueError("param must be writeable")
    _float_input(grad, "grad", param, "param")
    _same_shape(param, grad, "param", "grad")
    if _overlaps(param, grad):
        raise ValueError("param and grad must not share memory")
    seen = [param, grad]
    for arr, name in state:
        if arr is None:
            continue
        _float_input(arr, name, param, "param")
        _same_shape(param, arr, "param", name)
        if not arr.flags.writeable:
            raise ValueError(f"{name} must be writeable")
        if any(_overlaps(arr, other) for other in seen):
            raise ValueError(f"{name} must not share memory with another argument")
        seen.append(arr)


def _required(arr, needed, name, why):
    if needed and arr is None:
        raise ValueError(f"{name} is required {why}")


def _reals(**values):
    for name, value in values.items():
        _real(value, name)


def sgd_step(param, grad, momentum_buf, lr, momentum=0.0, dampening=0.0,
             nesterov=False, weight_decay=0.0, maximize=False, first_step=True):
    _reals(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
    _param_and_state(param, grad, (momentum_buf, "momentum_buf"))
    _required(momentum_buf, momentum != 0.0, "momentum_buf", "when momentum != 0")


def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0,
                 weight_decay=0.0, eps=1e-10, maximize=False):
    _reals(step=step, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
    _array(state_sum, "state_sum")
    _param_and_state(param, grad, (state_sum, "state_sum"))


def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buf, lr=0.01, alpha=0.99,
                 eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    _reals(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
    _array(square_avg, "square_avg")
    _param_and_state(param, grad, (square_avg, "square_avg"), (grad_avg, "grad_avg"),
                     (momentum_buf, "momentum_buf"))
    _required(grad_avg, centered, "grad_avg", "when centered")
    _required(momentum_buf, momentum > 0.0, "momentum_buf", "when momentum > 0")


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, beta1=0.9, beta2=0.999,
              eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, maximize=False):
    _reals(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    _array(exp_avg, "exp_avg")
    _array(exp_avg_sq, "exp_avg_sq")
    _param_and_state(param, grad, (exp_avg, "exp_avg"), (exp_avg_sq, "exp_avg_sq"))
    if not float(step) >= 1:
        raise ValueError(f"step must be >= 1, got {float(step):f}")  # std::to_string's format, as _core's


# ------------------------------------------------------------- the wrapping

KERNELS = ("softmax", "log_softmax",
           *(n + suffix for n in ELEMENTWISE_ACTIVATIONS for suffix in ("", "_backward")),
           "sum_squared_error", "sum_squared_error_backward", "mean_squared_error", "mean_squared_error_backward",
           "cross_entropy_error", "cross_entropy_error_backward", "cross_entropy", "softmax_cross_entropy",
           "binary_cross_entropy", "binary_cross_entropy_backward", "binary_cross_entropy_with_logits",
           "binary_cross_entropy_with_logits_backward", "matmul", "linear", "linear_backward",
           "dense_linear", "dense_linear_backward", "gather_rows", "prefetch_rows",
           "sgd_step", "adagrad_step", "rmsprop_step", "adam_step")


def _entry(check, kernel):
    @functools.wraps(kernel)
    def entry(*args, **kwargs):
        check(*args, **kwargs)
        return kernel(*args, **kwargs)
    return entry


def checked(module):
    """A module with `module`'s names, every kernel in KERNELS behind its check."""
    wrapped = types.ModuleType(module.__name__, module.__doc__)
    wrapped.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    wrapped.unchecked = module
    for name in KERNELS:
        setattr(wrapped, name, _entry(globals()[name], getattr(module, name)))
    return wrapped
