"""The losses: SSE, MSE, the textbook cross-entropy on probabilities,
cross-entropy from logits (alone, or fused with its gradient), and binary
cross-entropy on probabilities or logits.

Totals are float64 sums; 'none' returns per-element losses in the input dtype.
"""
import math

import numpy as np

from ._common import FM_SUM, empty, jit
from ._parallel import threaded
from .vmath import fmaxnum, vexp, vlog, vsigmoid

__all__ = ["sum_squared_error", "sum_squared_error_backward", "mean_squared_error", "mean_squared_error_backward",
           "cross_entropy_error", "cross_entropy_error_backward", "cross_entropy", "softmax_cross_entropy",
           "binary_cross_entropy", "binary_cross_entropy_backward", "binary_cross_entropy_with_logits",
           "binary_cross_entropy_with_logits_backward"]


@jit(fastmath=False)
def _seq_sum(a):
    # Strictly sequential sum, so that serial and parallel totals agree. The
    # explicit fastmath=False matters: callees inherit the caller's flags.
    s = 0.0
    for i in range(a.size):
        s += a[i]
    return s


def _reduced(total, count, per_element, reduction):
    # The reference's _reduce, given the float64 total and the per-element array.
    if reduction == "mean":
        return total / count if count else float("nan")
    if reduction == "sum":
        return total
    return per_element


def _reduction_scale(reduction, count):
    return 1.0 / count if reduction == "mean" and count else 1.0


@jit(fastmath=FM_SUM)
def _sqdiff_k(y, t, out, write):
    # Sum of (y - t)^2 in float64, d = y - t in the dtype as the reference;
    # with `write`, also out = d * d in the dtype.
    s = 0.0
    if write:
        for i in range(y.size):
            d = y[i] - t[i]
            out[i] = d * d
            s += float(d) * float(d)
    else:
        for i in range(y.size):
            d = float(y[i] - t[i])
            s += d * d
    return s


@jit
def _scaled_diff_k(y, t, c, out):
    # out = c * (y - t) in the dtype (c already of that dtype).
    for i in range(y.size):
        out[i] = c * (y[i] - t[i])


def sum_squared_error(y, t):
    return 0.5 * _sqdiff_k(y.ravel(), t.ravel(), empty(y.dtype), False)


def sum_squared_error_backward(y, t):
    out = np.empty(y.shape, y.dtype)
    _scaled_diff_k(y.ravel(), t.ravel(), y.dtype.type(1), out.ravel())
    return out


def mean_squared_error(y, t, reduction="mean"):
    if reduction not in ("mean", "sum"):
        per = np.empty(y.shape, y.dtype)
        _sqdiff_k(y.ravel(), t.ravel(), per.ravel(), True)
        return per
    return _reduced(_sqdiff_k(y.ravel(), t.ravel(), empty(y.dtype), False), y.size, None, reduction)


def mean_squared_error_backward(y, t, reduction="mean"):
    out = np.empty(y.shape, y.dtype)
    c = y.dtype.type(2 * _reduction_scale(reduction, y.size))
    _scaled_diff_k(y.ravel(), t.ravel(), c, out.ravel())
    return out


@jit(fastmath=FM_SUM)
def _cee_k(y, labels, t, use_labels):
    # Sum over rows of log(y + 1e-7) at the label, or weighted by t; y + 1e-7
    # in the dtype as the reference, the log and the sum in float64.
    eps = y.dtype.type(1e-7)
    s = 0.0
    if use_labels:
        for i in range(y.shape[0]):
            s += math.log(float(y[i, labels[i]] + eps))
    else:
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                s += float(t[i, j]) * np.log(float(y[i, j] + eps))
    return s


@jit
def _cee_bwd_k(y, labels, t, use_labels, out):
    n, c = y.shape
    eps = y.dtype.type(1e-7)
    nn = y.dtype.type(n)
    if use_labels:
        zero = y.dtype.type(0)
        for i in range(n):
            for j in range(c):
                out[i, j] = zero
            k = labels[i]
            out[i, k] = (y.dtype.type(-1) / (y[i, k] + eps)) / nn
    else:
        for i in range(n):
            for j in range(c):
                out[i, j] = -t[i, j] / (y[i, j] + eps) / nn


def cross_entropy_error(y, t):
    # Textbook CE on probabilities: y (N, C); t one-hot (N, C) or labels (N,).
    n = y.shape[0]
    if n == 0:
        return float("nan")
    if t.ndim == 1:
        s = _cee_k(y, t, empty(y.dtype, 2), True)
    else:
        s = _cee_k(y, empty(np.int64), t, False)
    return -s / n


def cross_entropy_error_backward(y, t):
    out = np.empty(y.shape, y.dtype)
    if t.ndim == 1:
        _cee_bwd_k(y, t, empty(y.dtype, 2), True, out)
    else:
        _cee_bwd_k(y, empty(np.int64), t, False, out)
    return out


@jit(fastmath=FM_SUM)
def _ce_rows(x, labels, t, use_labels, ls, scale, want_grad, grad, rows):
    # Softmax cross-entropy by rows: the row loss
    # -sum_c t~_c logp_c with t~ = t (1 - ls) + ls / C, in float64, and
    # grad = (p sum_c t~_c - t~) scale. Everything
    # needed from a row of x is read before its grad row is written, so grad
    # may be x itself.
    n, c = x.shape
    keep = 1.0 - ls
    ls_c = ls / c if c > 0 else 0.0
    for i in range(n):
        if c == 0:
            rows[i] = 0.0
            continue
        m = x[i, 0]
        for j in range(c):
            m = fmaxnum(m, x[i, j])
        mf = float(m)
        # sum_c (x_c - m), shifted term by term: a plain sum of x overflows for huge logits.
        sx = 0.0
        for j in range(c):
            sx += float(x[i, j]) - mf
        st = 1.0  # sum_c t_c
        stx = 0.0  # sum_c t_c (x_c - m)
        if use_labels:
            y = labels[i]
            stx = float(x[i, y]) - mf
        else:
            st = 0.0
            for j in range(c):
                st += t[i, j]
            for j in range(c):
                stx += float(t[i, j]) * (float(x[i, j]) - mf)
        s = 0.0
        if want_grad:
            for j in range(c):
                grad[i, j] = vexp(x[i, j] - m)
            for j in range(c):
                s += grad[i, j]
        else:
            for j in range(c):
                s += vexp(x[i, j] - m)
        lse = math.log(s)
        # Without smoothing the (ls / C) sum_c logp_c term is left out, as torch
        # does: a -inf logit of a class other than the label adds nothing.
        smooth = ls_c * (sx - c * lse) if ls > 0.0 else 0.0
        rows[i] = -(keep * (stx - st * lse) + smooth)
        if want_grad:
            if use_labels:
                inv = 1.0 / s
                e_y = float(grad[i, y])
                for j in range(c):
                    grad[i, j] = (grad[i, j] * inv - ls_c) * scale
                grad[i, y] = (e_y * inv - (keep + ls_c)) * scale
            else:
                inv = (st * keep + ls) / s  # sum_c t~_c / sum_c exp
                for j in range(c):
                    grad[i, j] = (grad[i, j] * inv - (float(t[i, j]) * keep + ls_c)) * scale


# Rows of at most this many classes go through _ce_narrow_rows.
_NARROW_CLASSES = 16
_NARROW_BLOCK = 256


@jit(fastmath=FM_SUM)
def _ce_narrow_block(x, labels, ls, scale, want_grad, grad, rows):
    # _ce_rows for labels and short rows (C <= _NARROW_CLASSES), same formulas
    # but the sums in the input dtype. A loop over 10 classes runs scalar, so
    # the rows are transposed into (C, N) scratch: every step then loops over
    # the rows and vectorises.
    n, c = x.shape
    keep = 1.0 - ls
    ls_c = ls / c
    xt = np.empty((c, n), x.dtype)
    for i in range(n):
        for j in range(c):
            xt[j, i] = x[i, j]
    m = xt[0].copy()
    for j in range(1, c):
        for i in range(n):
            m[i] = fmaxnum(m[i], xt[j, i])
    s = np.zeros(n, x.dtype)
    sx = np.zeros(n, x.dtype)
    for j in range(c):
        for i in range(n):
            d = xt[j, i] - m[i]
            e = vexp(d)
            xt[j, i] = e
            s[i] += e
            sx[i] += d
    lse = np.empty(n, x.dtype)
    for i in range(n):
        lse[i] = vlog(s[i])
    for i in range(n):
        smooth = ls_c * (sx[i] - c * lse[i]) if ls > 0.0 else 0.0
        rows[i] = -(keep * ((float(x[i, labels[i]]) - float(m[i])) - lse[i]) + smooth)
    if want_grad:
        for j in range(c):
            for i in range(n):
                xt[j, i] = (xt[j, i] / s[i] - ls_c) * scale
        for i in range(n):
            for j in range(c):
                grad[i, j] = xt[j, i]
            grad[i, labels[i]] -= keep * scale


@jit
def _ce_narrow_rows(x, labels, ls, scale, want_grad, grad, rows):
    # By blocks of rows, so that the scratch stays small and in cache.
    n = x.shape[0]
    for i0 in range(0, n, _NARROW_BLOCK):
        i1 = min(i0 + _NARROW_BLOCK, n)
        _ce_narrow_block(x[i0:i1], labels[i0:i1], ls, scale, want_grad, grad[i0:i1], rows[i0:i1])


@jit
def _ce_row_losses(x, labels, t, grad, rows, use_labels, ls, scale, want_grad):
    # rows (and grad) for checked labels: short rows by the transposed kernel.
    if use_labels and x.shape[1] <= _NARROW_CLASSES:
        _ce_narrow_rows(x, labels, ls, scale, want_grad, grad, rows)
    else:
        _ce_rows(x, labels, t, use_labels, ls, scale, want_grad, grad, rows)


_ce = threaded(_ce_row_losses, split=5)


def _ce_total(logits, target, label_smoothing, scale, grad):
    # Kept lean: on a training step's small logits the kernel itself is quick.
    n = logits.shape[0]
    rows = np.empty(n)
    use_labels = target.ndim == 1
    labels = target if use_labels else empty(np.int64)
    t = empty(logits.dtype, 2) if use_labels else target
    want_grad = grad is not None
    if not want_grad:
        grad = empty(logits.dtype, 2)
    _ce("rows", logits, labels, t, grad, rows, use_labels, float(label_smoothing), float(scale), want_grad)
    return _seq_sum(rows), rows


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    # torch.nn.functional.cross_entropy for (N, C) logits, without weights.
    total, rows = _ce_total(logits, target, label_smoothing, 1.0, None)
    per = rows.astype(logits.dtype) if reduction not in ("mean", "sum") else None
    return _reduced(total, logits.shape[0], per, reduction)


def softmax_cross_entropy(logits, target, reduction="mean", label_smoothing=0.0, out=None):
    # Returns (loss, dlogits); dlogits is the gradient of the reduced loss
    # ('none': of the sum of the row losses).
    grad = np.empty_like(logits) if out is None else out
    total, rows = _ce_total(logits, target, label_smoothing, _reduction_scale(reduction, logits.shape[0]), grad)
    per = rows.astype(logits.dtype) if reduction not in ("mean", "sum") else None
    return _reduced(total, logits.shape[0], per, reduction), grad


@jit(fastmath=FM_SUM)
def _bce_k(p, t, out, write):
    # -(t log p + (1 - t) log(1 - p)), each log clamped at -100; 1 - p in the
    # dtype as the reference, the rest in float64.
    one = p.dtype.type(1)
    s = 0.0
    for i in range(p.size):
        lp = np.log(float(p[i]))
        if lp < -100.0:
            lp = -100.0
        lq = np.log(float(one - p[i]))
        if lq < -100.0:
            lq = -100.0
        tt = float(t[i])
        v = -(tt * lp + (1.0 - tt) * lq)
        if write:
            out[i] = v
        s += v
    return s


@jit
def _bce_bwd_k(p, t, c, out):
    # c (p - t) / max(p (1 - p), 1e-12) in the dtype.
    one = p.dtype.type(1)
    floor = p.dtype.type(1e-12)
    for i in range(p.size):
        q = p[i] * (one - p[i])
        if q < floor:
            q = floor
        out[i] = c * (p[i] - t[i]) / q


@jit(fastmath=FM_SUM)
def _bcel_k(z, t, out, write):
    # max(z, 0) - z t + log1p(exp(-|z|)) in float64.
    s = 0.0
    for i in range(z.size):
        zz = float(z[i])
        v = (0.0 if zz < 0.0 else zz) - zz * float(t[i]) + math.log1p(vexp(-abs(zz)))
        if write:
            out[i] = v
        s += v
    return s


@jit
def _bcel_bwd_k(z, t, c, out):
    for i in range(z.size):
        out[i] = c * (vsigmoid(z[i]) - t[i])


def _elementwise_loss(kernel, a, t, reduction):
    if reduction not in ("mean", "sum"):
        per = np.empty(a.shape, a.dtype)
        kernel(a.ravel(), t.ravel(), per.ravel(), True)
        return per
    return _reduced(kernel(a.ravel(), t.ravel(), empty(a.dtype), False), a.size, None, reduction)


def _elementwise_loss_backward(kernel, a, t, reduction):
    out = np.empty(a.shape, a.dtype)
    kernel(a.ravel(), t.ravel(), a.dtype.type(_reduction_scale(reduction, a.size)), out.ravel())
    return out


def binary_cross_entropy(p, t, reduction="mean"):
    # torch clamps each log at -100 so that p = 0 or 1 gives a finite loss.
    return _elementwise_loss(_bce_k, p, t, reduction)


def binary_cross_entropy_backward(p, t, reduction="mean"):
    # torch's form: (p - t) / max(p (1 - p), 1e-12).
    return _elementwise_loss_backward(_bce_bwd_k, p, t, reduction)


def binary_cross_entropy_with_logits(z, t, reduction="mean"):
    # max(z, 0) - z t + log(1 + exp(-|z|)): stable for any z.
    return _elementwise_loss(_bcel_k, z, t, reduction)


def binary_cross_entropy_with_logits_backward(z, t, reduction="mean"):
    return _elementwise_loss_backward(_bcel_bwd_k, z, t, reduction)
