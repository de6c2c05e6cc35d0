"""The C++ backend: fastnn._core behind the backend interface of numpy_backend.

_core checks every argument itself; this module only maps reductions and
names onto it. Inputs arrive validated by fastnn.functional.
"""
import numpy as np

from .. import _core

NAME = "cpp"
# _core checks every argument itself (dtype, layout, shapes, label range) and
# raises TypeError / ValueError / IndexError: calls with plain arrays need no
# checks in Python first.
CHECKS_ARGUMENTS = True
FUSED_ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")

softmax = _core.softmax
log_softmax = _core.log_softmax
sigmoid = _core.sigmoid
sigmoid_backward = _core.sigmoid_backward
tanh = _core.tanh
tanh_backward = _core.tanh_backward
relu = _core.relu
relu_backward = _core.relu_backward
leaky_relu = _core.leaky_relu
leaky_relu_backward = _core.leaky_relu_backward
elu = _core.elu
elu_backward = _core.elu_backward
matmul = _core.matmul
gather_rows = _core.gather_rows
prefetch_rows = _core.prefetch_rows
softmax_cross_entropy = _core.softmax_cross_entropy


def _elementwise_loss(kernel, pred, target, reduction):
    if reduction == "none":
        per_element = np.empty_like(pred)
        kernel(pred, target, per_element)
        return per_element
    total = kernel(pred, target)
    if reduction == "sum":
        return total
    return total / pred.size if pred.size else float("nan")


def _scale(reduction, count):
    return 1.0 / count if reduction == "mean" and count else 1.0


def sum_squared_error(y, t):
    return 0.5 * _core.squared_error(y, t)


def sum_squared_error_backward(y, t):
    return _core.squared_error_backward(y, t, 1.0)


def mean_squared_error(y, t, reduction="mean"):
    return _elementwise_loss(_core.squared_error, y, t, reduction)


def mean_squared_error_backward(y, t, reduction="mean"):
    return _core.squared_error_backward(y, t, 2.0 * _scale(reduction, y.size))


def cross_entropy_error(y, t):
    return _core.cross_entropy_error(y, t) / y.shape[0]


def cross_entropy_error_backward(y, t):
    return _core.cross_entropy_error_backward(y, t, 1.0 / y.shape[0])


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    if reduction == "none":
        row_loss = np.empty(logits.shape[0], dtype=logits.dtype)
        _core.cross_entropy(logits, target, label_smoothing, row_loss)
        return row_loss
    total = _core.cross_entropy(logits, target, label_smoothing)
    return total * _scale(reduction, logits.shape[0]) if logits.shape[0] else float("nan")


def binary_cross_entropy(p, t, reduction="mean"):
    return _elementwise_loss(_core.binary_cross_entropy, p, t, reduction)


def binary_cross_entropy_backward(p, t, reduction="mean"):
    return _core.binary_cross_entropy_backward(p, t, _scale(reduction, p.size))


def binary_cross_entropy_with_logits(z, t, reduction="mean"):
    return _elementwise_loss(_core.binary_cross_entropy_with_logits, z, t, reduction)


def binary_cross_entropy_with_logits_backward(z, t, reduction="mean"):
    return _core.binary_cross_entropy_with_logits_backward(z, t, _scale(reduction, z.size))


# _core's signatures match the backend interface exactly for these.
linear = _core.linear
linear_backward = _core.linear_backward
sgd_step = _core.sgd_step
adagrad_step = _core.adagrad_step
rmsprop_step = _core.rmsprop_step
adam_step = _core.adam_step
