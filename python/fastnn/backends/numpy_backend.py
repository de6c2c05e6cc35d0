"""The reference backend: textbook-plain NumPy, numerically stable.

Every backend (numpy, numba, cpp) exposes these same names with these same
signatures. `fastnn.backends.load` puts each kernel of this module behind its
check in backends.checks (the same checks as _core's), so a kernel here may
assume C-contiguous float32/float64 arrays of agreeing shapes and dtypes, and
int64 labels in [0, C).

Shapes: x, logits are (N, C); labels are (N,) int64; W is (in, out).
"""
import numpy as np

NAME = "numpy"

# Activations that linear() / linear_backward() can fuse. Their derivatives are
# written in terms of the activation's output y, which the layer keeps.
FUSED_ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")


def _put(out, value):
    if out is None:
        return value
    out[...] = value
    return out


# ---------------------------------------------------------------- softmax family

def softmax(x, out=None):
    # (N, C) -> (N, C); subtracting the row max keeps exp() from overflowing.
    if x.shape[1] == 0:
        return _put(out, x.copy())
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return _put(out, e / e.sum(axis=1, keepdims=True))


def log_softmax(x, out=None):
    # (N, C) -> (N, C); log-sum-exp, never log(softmax) which underflows to -inf.
    if x.shape[1] == 0:
        return _put(out, x.copy())
    shifted = x - x.max(axis=1, keepdims=True)
    return _put(out, shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))


# ------------------------------------------------------------------ activations
# Forward takes x; backward takes what the derivative is simplest in
# (the output y for sigmoid/tanh/relu, the input x for leaky_relu/elu) and dy.


def sigmoid(x, out=None):
    # Split by sign so that exp() only ever sees non-positive arguments.
    e = np.exp(-np.abs(x))
    return _put(out, np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False))


def sigmoid_backward(y, dy, out=None):
    return _put(out, dy * y * (1 - y))


def tanh(x, out=None):
    return _put(out, np.tanh(x))


def tanh_backward(y, dy, out=None):
    return _put(out, dy * (1 - y * y))


def relu(x, out=None):
    return _put(out, np.maximum(x, 0))


def relu_backward(y, dy, out=None):
    return _put(out, np.where(y > 0, dy, 0).astype(dy.dtype, copy=False))


def leaky_relu(x, negative_slope=0.01, out=None):
    return _put(out, np.where(x > 0, x, x * negative_slope).astype(x.dtype, copy=False))


def leaky_relu_backward(x, dy, negative_slope=0.01, out=None):
    return _put(out, np.where(x > 0, dy, dy * negative_slope).astype(dy.dtype, copy=False))


def elu(x, alpha=1.0, out=None):
    return _put(out, np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False))


def elu_backward(x, dy, alpha=1.0, out=None):
    return _put(out, np.where(x > 0, dy, dy * alpha * np.exp(np.minimum(x, 0))).astype(dy.dtype, copy=False))


def _activation_grad_from_output(y, dy, activation):
    if activation == "none":
        return dy
    if activation == "relu":
        return relu_backward(y, dy)
    if activation == "sigmoid":
        return sigmoid_backward(y, dy)
    return tanh_backward(y, dy)


_ACTIVATION = {"none": lambda z: z, "relu": relu, "sigmoid": sigmoid, "tanh": tanh}


# ------------------------------------------------------------------------ losses

def _reduce(per_element, reduction):
    if reduction == "mean":
        return float(per_element.mean())
    if reduction == "sum":
        return float(per_element.sum())
    return per_element


def _reduction_scale(reduction, count):
    return 1.0 / count if reduction == "mean" and count else 1.0


def sum_squared_error(y, t):
    return float(0.5 * np.sum((y - t) ** 2))


def sum_squared_error_backward(y, t):
    return y - t


def mean_squared_error(y, t, reduction="mean"):
    return _reduce((y - t) ** 2, reduction)


def mean_squared_error_backward(y, t, reduction="mean"):
    return (2 * _reduction_scale(reduction, y.size)) * (y - t)


def cross_entropy_error(y, t):
    # Textbook CE on probabilities: y (N, C); t one-hot (N, C) or labels (N,).
    n = y.shape[0]
    if t.ndim == 1:
        return float(-np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n)
    return float(-np.sum(t * np.log(y + 1e-7)) / n)


def cross_entropy_error_backward(y, t):
    n = y.shape[0]
    if t.ndim == 1:
        dy = np.zeros_like(y)
        dy[np.arange(n), t] = -1.0 / (y[np.arange(n), t] + 1e-7)
        return dy / n
    return -t / (y + 1e-7) / n


def _smoothed_target(target, n_classes, label_smoothing, dtype):
    # Labels (N,) or probabilities (N, C) -> probabilities (N, C) with smoothing.
    if target.ndim == 1:
        probs = np.zeros((target.shape[0], n_classes), dtype=dtype)
        probs[np.arange(target.shape[0]), target] = 1
    else:
        probs = target
    return probs * (1 - label_smoothing) + label_smoothing / n_classes


def _row_losses(t, logp, labels):
    # -sum_c t_c log p_c; with integer labels, as torch picks log p at the label,
    # classes of weight 0 add nothing even where log p is -inf.
    terms = t * logp
    if labels:
        terms = np.where(t != 0, terms, 0)
    return -terms.sum(axis=1)


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    # torch.nn.functional.cross_entropy for (N, C) logits, without weights.
    t = _smoothed_target(target, logits.shape[1], label_smoothing, logits.dtype)
    return _reduce(_row_losses(t, log_softmax(logits), target.ndim == 1), reduction)


def softmax_cross_entropy(logits, target, reduction="mean", label_smoothing=0.0, out=None):
    # Returns (loss, dlogits); dlogits is the gradient of the reduced loss
    # ('none': of the sum of the row losses).
    t = _smoothed_target(target, logits.shape[1], label_smoothing, logits.dtype)
    logp = log_softmax(logits)
    per_row = _row_losses(t, logp, target.ndim == 1)
    # d/dz of -sum_c t_c log p_c is p * sum_c t_c - t (sum_c t_c = 1 for a distribution).
    grad = np.exp(logp) * t.sum(axis=1, keepdims=True) - t
    grad *= _reduction_scale(reduction, logits.shape[0])
    return _reduce(per_row, reduction), _put(out, grad.astype(logits.dtype, copy=False))


def binary_cross_entropy(p, t, reduction="mean"):
    # torch clamps each log at -100 so that p = 0 or 1 gives a finite loss.
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), -100)
        log_1mp = np.maximum(np.log(1 - p), -100)
    return _reduce(-(t * log_p + (1 - t) * log_1mp), reduction)


def binary_cross_entropy_backward(p, t, reduction="mean"):
    # torch's form: (p - t) / max(p (1 - p), 1e-12).
    scale = _reduction_scale(reduction, p.size)
    return (scale * (p - t) / np.maximum(p * (1 - p), 1e-12)).astype(p.dtype, copy=False)


def binary_cross_entropy_with_logits(z, t, reduction="mean"):
    # max(z, 0) - z t + log(1 + exp(-|z|)): stable for any z.
    return _reduce(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))), reduction)


def binary_cross_entropy_with_logits_backward(z, t, reduction="mean"):
    return (_reduction_scale(reduction, z.size) * (sigmoid(z) - t)).astype(z.dtype, copy=False)


# ------------------------------------------------------------------------ linear

def matmul(a, b, trans_a=False, trans_b=False, out=None):
    # op(a) (M, K) @ op(b) (K, N) -> (M, N); op transposes when asked.
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    if out is None:
        return a @ b
    return np.matmul(a, b, out=out)


def linear(x, W, b=None, activation="none", out=None):
    # x (N, in), W (in, out), b (out,) -> act(x @ W + b) (N, out).
    z = x @ W
    if b is not None:
        z += b
    return _put(out, _ACTIVATION[activation](z))


def linear_backward(x, W, dy, y=None, activation="none", need_dx=True,
                    dx_out=None, dW_out=None, db_out=None, x_activation="none"):
    # x (N, in), W (in, out), dy (N, out) = dL/d(act output); y is that output,
    # needed when an activation was fused. Returns (dx or None, dW, db); with
    # x_activation, x is that activation's output and dx goes through it.
    dz = _activation_grad_from_output(y, dy, activation)
    dW = _put(dW_out, x.T @ dz)
    db = _put(db_out, dz.sum(axis=0))
    dx = _put(dx_out, _activation_grad_from_output(x, dz @ W.T, x_activation)) if need_dx else None
    return dx, dW, db


# No block-sparse product here: the dense one serves sparse_input=False too.
BLOCK_SPARSE = False
dense_linear = linear
dense_linear_backward = linear_backward


def gather_rows(x, index, out=None):
    # x (N, ...) and index (B,) -> x[index] (B, ...): one mini-batch.
    if out is None:
        return x[index]
    return np.take(x, index, axis=0, out=out)


def prefetch_rows(x, index):
    # A hint that x[index] is gathered next; only the cpp backend acts on it.
    pass


# -------------------------------------------------------------- optimizer steps
# One in-place update of one parameter, following torch.optim's single-tensor
# code exactly. `step` counts from 1 and is already incremented by the caller.

def sgd_step(param, grad, momentum_buf, lr, momentum=0.0, dampening=0.0,
             nesterov=False, weight_decay=0.0, maximize=False, first_step=True):
    g = -grad if maximize else grad
    if weight_decay:
        g = g + weight_decay * param
    if momentum:
        if first_step:
            momentum_buf[...] = g
        else:
            momentum_buf *= momentum
            momentum_buf += (1 - dampening) * g
        g = g + momentum * momentum_buf if nesterov else momentum_buf
    param -= lr * g


def adagrad_step(param, grad, state_sum, step, lr=0.01, lr_decay=0.0,
                 weight_decay=0.0, eps=1e-10, maximize=False):
    g = -grad if maximize else grad
    if weight_decay:
        g = g + weight_decay * param
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum += g * g
    param -= clr * g / (np.sqrt(state_sum) + eps)


def rmsprop_step(param, grad, square_avg, grad_avg, momentum_buf, lr=0.01, alpha=0.99,
                 eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    # grad_avg is used only when centered, momentum_buf only when momentum > 0.
    g = -grad if maximize else grad
    if weight_decay:
        g = g + weight_decay * param
    square_avg *= alpha
    square_avg += (1 - alpha) * g * g
    if centered:
        grad_avg *= alpha
        grad_avg += (1 - alpha) * g
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if momentum > 0:
        momentum_buf *= momentum
        momentum_buf += g / avg
        param -= lr * momentum_buf
    else:
        param -= lr * g / avg


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr=1e-3, beta1=0.9, beta2=0.999,
              eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, maximize=False):
    # Adam, or AdamW when decoupled_weight_decay (the decay then scales param directly).
    g = -grad if maximize else grad
    if weight_decay:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * param
    exp_avg *= beta1
    exp_avg += (1 - beta1) * g
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    denom = np.sqrt(exp_avg_sq) / np.sqrt(bias_correction2) + eps
    param -= (lr / bias_correction1) * exp_avg / denom
