"""matmul, linear (x @ W + b with a fused activation) and its backward pass,
and gather_rows (one mini-batch). NumPy's BLAS does the products; numba does
the fused bias + activation epilogue and the activation-gradient + bias-gradient
pass, branching on the activation codes of `activations`."""
import numpy as np

from ._common import empty, finish, jit
from ._parallel import threaded
from .activations import (ACTIVATION_CODES, _A_NONE, _A_RELU, _A_SIGMOID, _A_TANH, _act_backward, _relu1,
                          _relu_grad1, _sigmoid_grad1, _tanh_grad1)
from .vmath import vsigmoid, vtanh

__all__ = ["FUSED_ACTIVATIONS", "BLOCK_SPARSE", "matmul", "linear", "linear_backward", "dense_linear",
           "dense_linear_backward", "gather_rows", "prefetch_rows"]

# Activations that linear() / linear_backward() can fuse. Their derivatives are
# written in terms of the activation's output y, which the layer keeps.
FUSED_ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")


def matmul(a, b, trans_a=False, trans_b=False, out=None):
    # op(a) (M, K) @ op(b) (K, N) -> (M, N); op transposes when asked.
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    if out is None:
        return a @ b
    return np.matmul(a, b, out=out)


@jit
def _bias_act_rows(z, b, has_b, code):
    # In place: z = act(z + b), the reference's `z += b` and activation in the
    # dtype. One loop per activation over activations' one-element functions
    # (calling activations._act_fwd_k on each row in place would stop LLVM
    # from vectorising).
    n, c = z.shape
    for i in range(n):
        if has_b:
            for j in range(c):
                z[i, j] = z[i, j] + b[j]
        if code == _A_RELU:
            for j in range(c):
                z[i, j] = _relu1(z[i, j])
        elif code == _A_SIGMOID:
            for j in range(c):
                z[i, j] = vsigmoid(z[i, j])
        elif code == _A_TANH:
            for j in range(c):
                z[i, j] = vtanh(z[i, j])


_bias_act = threaded(_bias_act_rows)


def linear(x, W, b=None, activation="none", out=None):
    # x (N, in), W (in, out), b (out,) -> act(x @ W + b) (N, out).
    code = ACTIVATION_CODES[activation]
    shape = (x.shape[0], W.shape[1])
    if (out is not None and out.dtype == np.result_type(x, W) and out.shape == shape
            and out.flags.c_contiguous and out.flags.writeable):
        z = np.matmul(x, W, out=out)
    else:
        z = x @ W
    if b is not None or code != _A_NONE:
        if not z.flags.c_contiguous:
            z = np.ascontiguousarray(z)
        bb = b if b is not None else empty(z.dtype)
        kind = "elementwise" if activation in ("none", "relu") else "transcendental"
        _bias_act(kind, z, bb, b is not None, code)
    return finish(out, z)


@jit
def _act_grad_bias_cols(y, dy, dz, db, code, j0, j1):
    # Columns [j0, j1): dz = dL/d(pre-activation) from the output y and dy (not
    # written for 'none', where dz is dy) and db = column sums of dz in float64,
    # each summed in row order. The loops run over row slices and vectorise
    # across columns; no fast-math (contraction would change dz from the
    # reference's).
    n = dy.shape[0]
    w = j1 - j0
    dbs = db[j0:j1]
    for j in range(w):
        dbs[j] = 0.0
    for i in range(n):
        g_in = dy[i, j0:j1]
        if code == _A_NONE:
            for j in range(w):
                dbs[j] += g_in[j]
        else:
            y_in = y[i, j0:j1]
            g_out = dz[i, j0:j1]
            if code == _A_RELU:
                for j in range(w):
                    g = _relu_grad1(y_in[j], g_in[j])
                    g_out[j] = g
                    dbs[j] += g
            elif code == _A_SIGMOID:
                for j in range(w):
                    g = _sigmoid_grad1(y_in[j], g_in[j])
                    g_out[j] = g
                    dbs[j] += g
            else:
                for j in range(w):
                    g = _tanh_grad1(y_in[j], g_in[j])
                    g_out[j] = g
                    dbs[j] += g


# Split by columns, so that each bias gradient is summed by one thread in row order.
_act_grad_bias = threaded(_act_grad_bias_cols, split=0, align=16)


def linear_backward(x, W, dy, y=None, activation="none", need_dx=True,
                    dx_out=None, dW_out=None, db_out=None, x_activation="none"):
    # x (N, in), W (in, out), dy (N, out) = dL/d(act output); y is that output,
    # needed when an activation was fused. Returns (dx or None, dW, db); with
    # x_activation, x is that activation's output and dx goes through it.
    code = ACTIVATION_CODES[activation]
    if code != _A_NONE:
        dz = np.empty(dy.shape, dy.dtype)
        arrays = (y, dy, dz)
    else:
        dz = dy
        arrays = (empty(dy.dtype, 2), dy, empty(dy.dtype, 2))
    db64 = np.empty(dy.shape[1], np.float64)
    _act_grad_bias("elementwise", *arrays, db64, code, work=dy.size, n=dy.shape[1])
    dW = matmul(x, dz, trans_a=True, out=dW_out)
    if db_out is None:
        db = db64.astype(dy.dtype)
    else:
        db_out[...] = db64
        db = db_out
    dx = matmul(dz, W, trans_b=True, out=dx_out) if need_dx else None
    if dx is not None and x_activation != "none":
        _act_backward(x, dx, dx, ACTIVATION_CODES[x_activation], "elementwise")
    return dx, dW, db


# No block-sparse product here: the dense one serves sparse_input=False too.
BLOCK_SPARSE = False
dense_linear = linear
dense_linear_backward = linear_backward


@jit
def _gather_k(index, out, x):
    # out[k] = x[index[k]] for 2-D views (index checked to be in range).
    d = x.shape[1]
    for k in range(index.shape[0]):
        src = x[index[k]]
        dst = out[k]
        for j in range(d):
            dst[j] = src[j]


_gather = threaded(_gather_k, split=2)


def gather_rows(x, index, out=None):
    # x (N, ...) and index (B,) -> x[index] (B, ...): one mini-batch.
    shape = (index.shape[0],) + x.shape[1:]
    res = np.empty(shape, x.dtype) if out is None else out
    if res.size == 0:
        return res
    # Rows are copied as bytes, so every dtype (float16, big-endian, ...) works alike.
    x2 = x.reshape(x.shape[0], -1).view(np.uint8)
    r2 = res.reshape(shape[0], -1).view(np.uint8)
    _gather("gather", index, r2, x2, work=r2.size)
    return res


def prefetch_rows(x, index):
    # A hint that x[index] is gathered next; only the cpp backend acts on it.
    pass
