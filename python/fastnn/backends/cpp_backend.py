"""The C++ backend: fastnn._core behind the backend interface of numpy_backend.

_core checks every argument it is given (dtype, layout, shapes, label range,
overlaps) and raises TypeError / ValueError / IndexError, so most kernels are
_core's functions themselves. The wrappers below map reductions onto _core and
check only what _core never sees: the reduction's name and an empty mean.

fastnn.nn and fastnn.train call linear, linear_backward and gather_rows with
positional arguments in the order of the backend interface: pybind11 matches
keywords by name, which costs about a microsecond a call on the training step.
"""
import functools

import numpy as np

from .. import _core
from .checks import ELEMENTWISE_ACTIVATIONS, REDUCTIONS, check_nonempty, check_reduction

NAME = "cpp"
FUSED_ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")

softmax = _core.softmax
log_softmax = _core.log_softmax
# _core's activations come from the C++ table (src/cpp/activation.h), with the same names.
for _name in ELEMENTWISE_ACTIVATIONS:
    globals()[_name], globals()[_name + "_backward"] = getattr(_core, _name), getattr(_core, _name + "_backward")
del _name
matmul = _core.matmul
gather_rows = _core.gather_rows
prefetch_rows = _core.prefetch_rows


def _elementwise_loss(kernel, pred, pred_name, target, reduction):
    check_reduction(reduction)
    if reduction == "none":
        per_element = np.empty_like(pred)
        kernel(pred, target, per_element)
        return per_element
    total = kernel(pred, target)
    if reduction == "sum":
        return total
    check_nonempty(pred, pred_name)
    return total / pred.size


def _scale(reduction, count):
    check_reduction(reduction)
    return 1.0 / count if reduction == "mean" and count else 1.0


def sum_squared_error(y, t):
    return 0.5 * _core.squared_error(y, t)


def sum_squared_error_backward(y, t):
    return _core.squared_error_backward(y, t, 1.0)


def mean_squared_error(y, t, reduction="mean"):
    return _elementwise_loss(_core.squared_error, y, "y", t, reduction)


def mean_squared_error_backward(y, t, reduction="mean"):
    return _core.squared_error_backward(y, t, 2.0 * _scale(reduction, y.size))


def _nonempty_probabilities(y):
    # _core would first refuse the labels of an empty (N, 0) y, as out of range.
    if isinstance(y, np.ndarray):
        check_nonempty(y, "y")


def cross_entropy_error(y, t):
    _nonempty_probabilities(y)
    return _core.cross_entropy_error(y, t) / y.shape[0]


def cross_entropy_error_backward(y, t):
    _nonempty_probabilities(y)
    rows = y.shape[0] if isinstance(y, np.ndarray) and y.ndim == 2 else 1  # _core refuses any other y
    return _core.cross_entropy_error_backward(y, t, 1.0 / rows)


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    check_reduction(reduction)
    if reduction == "none":
        row_loss = np.empty(logits.shape[0], dtype=logits.dtype)
        _core.cross_entropy(logits, target, label_smoothing, row_loss)
    else:
        total = _core.cross_entropy(logits, target, label_smoothing)
    if logits.shape[0] == 0:
        raise ValueError("logits has no rows: a loss over no elements is undefined")
    return row_loss if reduction == "none" else total * _scale(reduction, logits.shape[0])


def softmax_cross_entropy(logits, target, reduction="mean", label_smoothing=0.0, out=None):
    # pybind11 refuses a reduction that is not a str with its own TypeError: the validator's ValueError instead.
    if reduction not in REDUCTIONS:
        check_reduction(reduction)
    return _core.softmax_cross_entropy(logits, target, reduction, label_smoothing, out)


def binary_cross_entropy(p, t, reduction="mean"):
    return _elementwise_loss(_core.binary_cross_entropy, p, "p", t, reduction)


def binary_cross_entropy_backward(p, t, reduction="mean"):
    return _core.binary_cross_entropy_backward(p, t, _scale(reduction, p.size))


def binary_cross_entropy_with_logits(z, t, reduction="mean"):
    return _elementwise_loss(_core.binary_cross_entropy_with_logits, z, "z", t, reduction)


def binary_cross_entropy_with_logits_backward(z, t, reduction="mean"):
    return _core.binary_cross_entropy_with_logits_backward(z, t, _scale(reduction, z.size))


# _core's signatures match the backend interface exactly for these. linear
# and linear_backward multiply a mostly-zero x block-sparsely (see
# fastnn.sparse_input); _core decides that per call.
BLOCK_SPARSE = True
linear = _core.linear
linear_backward = _core.linear_backward
dense_linear = functools.partial(_core.linear, sparse=False)
dense_linear_backward = functools.partial(_core.linear_backward, sparse=False)
sgd_step = _core.sgd_step
adagrad_step = _core.adagrad_step
rmsprop_step = _core.rmsprop_step
adam_step = _core.adam_step
