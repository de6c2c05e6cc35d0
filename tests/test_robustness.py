"""Robustness: bad input never crashes fastnn, and is refused or handled the
same way by every backend.

* A garbage-call harness calls EVERY public `fastnn._core` function (found with
  dir(_core): a new one that the harness does not know about fails the test)
  with wrong arity, None, non-arrays, wrong dtypes, byte-swapped arrays,
  mismatched shapes, zero sizes, 0-d arrays, out-of-range labels and indices,
  odd scalars, strided / Fortran / reversed / unaligned views, read-only
  outputs, outputs overlapping inputs and non-finite values. It runs in a
  SUBPROCESS per category, so that a crash is a test failure and not a dead
  pytest. Every call must return or raise TypeError / ValueError / IndexError;
  a call that is accepted although one argument was a strided, byte-swapped,
  aliased or read-only array must give exactly the result of the clean call
  (and leave a read-only array untouched). Under scripts/sanitize.sh the
  subprocesses inherit LD_PRELOAD / ASAN_OPTIONS, so ASan and UBSan watch
  every one of these calls. `pytest -s` prints the counts.
* The same harness, aimed at `fastnn.functional`, runs each call on the numpy,
  numba and cpp backends and requires the same outcome (the same exception
  class, or results equal to the NumPy reference, NaN for NaN).
* Targeted tests for the validation contract of fastnn.functional (explicit
  conversion, messages that name the argument, strided views, labels, empty
  batches, NaN / Inf) and for the ISA paths (FASTNN_ISA in subprocesses).
"""
import collections
import gc
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import traceback
import warnings

import numpy as np

try:  # the worker mode (python tests/test_robustness.py --worker ...) needs no pytest
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ALLOWED = (TypeError, ValueError, IndexError)

# ============================================================================
# Part 1: the garbage-call harness (runs in a subprocess)
# ============================================================================

IN, OUT, IO, LAB, FLT, BOOL, STR, INT = "in", "out", "io", "lab", "float", "bool", "str", "int"
# Kernels that handle rows of x as raw bytes: any plain dtype of x is valid; index picks rows.
ROW_KERNELS = ("gather_rows", "prefetch_rows")
ARRAY_ROLES = (IN, OUT, IO, LAB)
DIMS = {"N": 5, "C": 7, "K": 3}

# Functions that are information only (no arguments).
INFO_FUNCTIONS = ("version", "compiler", "isa", "cpu_isa", "pool_workers", "num_threads", "has_bf16",
                  "matmul_precision")


class Builder:
    """Builds the arguments of one valid call: a list of (name, role, value)."""

    def __init__(self, dtype, dims, outs, seed):
        self.dt = np.dtype(dtype)
        self.N, self.C, self.K = dims["N"], dims["C"], dims["K"]
        self.outs = outs
        self.rng = np.random.default_rng(seed)

    def normal(self, *shape):
        return self.rng.standard_normal(shape).astype(self.dt)

    def uniform(self, lo, hi, *shape):
        return self.rng.uniform(lo, hi, shape).astype(self.dt)

    def sparse(self, *shape):
        """Mostly zeros, like image pixels: linear takes its sparse path for these."""
        x = self.rng.standard_normal(shape)
        x[self.rng.random(shape) < 0.9] = 0
        return x.astype(self.dt)

    def simplex(self, n, c):
        p = self.rng.uniform(0.05, 1.0, (n, c))
        return (p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)).astype(self.dt)

    def labels(self, n, c):
        return self.rng.integers(0, max(c, 1), n).astype(np.int64)

    def out(self, *shape):
        return np.full(shape, -7.0, self.dt) if self.outs else None


def _elementwise(b):
    return [("x", IN, b.normal(b.N, b.C)), ("out", OUT, b.out(b.N, b.C))]


def _spec_table():
    """name -> list of (variant, build(b) -> [(name, role, value), ...]).
    Several variants cover functions whose target or layout has two forms."""
    S = collections.OrderedDict()

    S["softmax"] = S["log_softmax"] = [("", _elementwise)]
    S["relu"] = S["sigmoid"] = S["tanh"] = [("", _elementwise)]
    S["leaky_relu"] = [("", lambda b: [("x", IN, b.normal(b.N, b.C)), ("negative_slope", FLT, 0.05),
                                       ("out", OUT, b.out(b.N, b.C))])]
    S["elu"] = [("", lambda b: [("x", IN, b.normal(b.N, b.C)), ("alpha", FLT, 0.7), ("out", OUT, b.out(b.N, b.C))])]

    def bwd_from_y(lo, hi):
        return lambda b: [("y", IN, b.uniform(lo, hi, b.N, b.C)), ("dy", IN, b.normal(b.N, b.C)),
                          ("out", OUT, b.out(b.N, b.C))]
    S["relu_backward"] = [("", bwd_from_y(-1, 1))]
    S["sigmoid_backward"] = [("", bwd_from_y(0, 1))]
    S["tanh_backward"] = [("", bwd_from_y(-1, 1))]
    S["leaky_relu_backward"] = [("", lambda b: [("x", IN, b.normal(b.N, b.C)), ("dy", IN, b.normal(b.N, b.C)),
                                                ("negative_slope", FLT, 0.05), ("out", OUT, b.out(b.N, b.C))])]
    S["elu_backward"] = [("", lambda b: [("x", IN, b.normal(b.N, b.C)), ("dy", IN, b.normal(b.N, b.C)),
                                         ("alpha", FLT, 0.7), ("out", OUT, b.out(b.N, b.C))])]

    def loss(first, lo, hi):
        return lambda b: [(first, IN, b.uniform(lo, hi, b.N, b.C)), ("t", IN, b.uniform(0, 1, b.N, b.C)),
                          ("per_element", OUT, b.out(b.N, b.C))]

    def loss_bwd(first, lo, hi):
        return lambda b: [(first, IN, b.uniform(lo, hi, b.N, b.C)), ("t", IN, b.uniform(0, 1, b.N, b.C)),
                          ("scale", FLT, 0.25), ("out", OUT, b.out(b.N, b.C))]
    S["squared_error"] = [("", loss("y", -2, 2))]
    S["squared_error_backward"] = [("", loss_bwd("y", -2, 2))]
    S["binary_cross_entropy"] = [("", loss("p", 0.05, 0.95))]
    S["binary_cross_entropy_backward"] = [("", loss_bwd("p", 0.05, 0.95))]
    S["binary_cross_entropy_with_logits"] = [("", loss("z", -3, 3))]
    S["binary_cross_entropy_with_logits_backward"] = [("", loss_bwd("z", -3, 3))]

    S["cross_entropy"] = [
        ("labels", lambda b: [("logits", IN, b.normal(b.N, b.C)), ("target", LAB, b.labels(b.N, b.C)),
                              ("label_smoothing", FLT, 0.1), ("row_loss", OUT, b.out(b.N)),
                              ("dlogits", OUT, b.out(b.N, b.C)), ("grad_scale", FLT, 0.2)]),
        ("probs", lambda b: [("logits", IN, b.normal(b.N, b.C)), ("target", IN, b.simplex(b.N, b.C)),
                             ("label_smoothing", FLT, 0.0), ("row_loss", OUT, b.out(b.N)),
                             ("dlogits", OUT, b.out(b.N, b.C)), ("grad_scale", FLT, 1.0)]),
    ]
    S["softmax_cross_entropy"] = [
        ("labels", lambda b: [("logits", IN, b.normal(b.N, b.C)), ("target", LAB, b.labels(b.N, b.C)),
                              ("reduction", STR, "mean"), ("label_smoothing", FLT, 0.1),
                              ("out", OUT, b.out(b.N, b.C))]),
        ("probs", lambda b: [("logits", IN, b.normal(b.N, b.C)), ("target", IN, b.simplex(b.N, b.C)),
                             ("reduction", STR, "none"), ("label_smoothing", FLT, 0.0), ("out", OUT, None)]),
    ]
    S["cross_entropy_error"] = [
        ("labels", lambda b: [("y", IN, b.simplex(b.N, b.C)), ("t", LAB, b.labels(b.N, b.C))]),
        ("onehot", lambda b: [("y", IN, b.simplex(b.N, b.C)),
                              ("t", IN, np.eye(max(b.C, 1), dtype=b.dt)[b.labels(b.N, b.C)][:, :b.C])]),
    ]
    S["cross_entropy_error_backward"] = [
        ("labels", lambda b: [("y", IN, b.simplex(b.N, b.C)), ("t", LAB, b.labels(b.N, b.C)),
                              ("scale", FLT, 0.2), ("out", OUT, b.out(b.N, b.C))]),
        ("onehot", lambda b: [("y", IN, b.simplex(b.N, b.C)),
                              ("t", IN, np.eye(max(b.C, 1), dtype=b.dt)[b.labels(b.N, b.C)][:, :b.C]),
                              ("scale", FLT, 0.2), ("out", OUT, b.out(b.N, b.C))]),
    ]

    S["matmul"] = [
        ("", lambda b: [("a", IN, b.normal(b.N, b.K)), ("b", IN, b.normal(b.K, b.C)), ("trans_a", BOOL, False),
                        ("trans_b", BOOL, False), ("out", OUT, b.out(b.N, b.C))]),
        ("trans", lambda b: [("a", IN, b.normal(b.K, b.N)), ("b", IN, b.normal(b.C, b.K)), ("trans_a", BOOL, True),
                             ("trans_b", BOOL, True), ("out", OUT, b.out(b.N, b.C))]),
    ]
    S["linear"] = [
        ("", lambda b: [("x", IN, b.normal(b.N, b.K)), ("W", IN, b.normal(b.K, b.C)), ("b", IN, b.normal(b.C)),
                        ("activation", STR, "relu"), ("out", OUT, b.out(b.N, b.C))]),
        ("sparse x", lambda b: [("x", IN, b.sparse(b.N, b.K)), ("W", IN, b.normal(b.K, b.C)),
                                ("b", IN, b.normal(b.C)), ("activation", STR, "tanh"), ("out", OUT, b.out(b.N, b.C))]),
    ]
    S["linear_backward"] = [
        ("relu", lambda b: [("x", IN, b.normal(b.N, b.K)), ("W", IN, b.normal(b.K, b.C)),
                            ("dy", IN, b.normal(b.N, b.C)), ("y", IN, b.uniform(-1, 1, b.N, b.C).clip(0)),
                            ("activation", STR, "relu"), ("need_dx", BOOL, True),
                            ("dx_out", OUT, b.out(b.N, b.K)), ("dW_out", OUT, b.out(b.K, b.C)),
                            ("db_out", OUT, b.out(b.C)), ("dz_out", OUT, b.out(b.N, b.C))]),
        ("none", lambda b: [("x", IN, b.normal(b.N, b.K)), ("W", IN, b.normal(b.K, b.C)),
                            ("dy", IN, b.normal(b.N, b.C)), ("y", IN, None),
                            ("activation", STR, "none"), ("need_dx", BOOL, True),
                            ("dx_out", OUT, b.out(b.N, b.K)), ("dW_out", OUT, b.out(b.K, b.C)),
                            ("db_out", OUT, b.out(b.C)), ("dz_out", OUT, None)]),
        ("sparse x", lambda b: [("x", IN, b.sparse(b.N, b.K)), ("W", IN, b.normal(b.K, b.C)),
                                ("dy", IN, b.normal(b.N, b.C)), ("y", IN, b.uniform(-1, 1, b.N, b.C).clip(0)),
                                ("activation", STR, "relu"), ("need_dx", BOOL, False),
                                ("dx_out", OUT, None), ("dW_out", OUT, b.out(b.K, b.C)),
                                ("db_out", OUT, b.out(b.C)), ("dz_out", OUT, b.out(b.N, b.C))]),
    ]
    S["gather_rows"] = [
        ("", lambda b: [("x", IN, b.normal(b.N, b.C)), ("index", LAB, b.labels(b.K, b.N)),
                        ("out", OUT, b.out(b.K, b.C))]),
    ]
    S["prefetch_rows"] = [
        ("", lambda b: [("x", IN, b.normal(b.N, b.C)), ("index", LAB, b.labels(b.K, b.N))]),
    ]
    S["block_sparse"] = [
        ("rows", lambda b: [("x", IN, b.sparse(b.N, b.C)), ("by_columns", BOOL, False)]),
        ("columns", lambda b: [("x", IN, b.sparse(b.N, b.C)), ("by_columns", BOOL, True)]),
    ]

    S["sgd_step"] = [
        ("", lambda b: [("param", IO, b.normal(b.N, b.C)), ("grad", IN, b.normal(b.N, b.C)),
                        ("momentum_buf", IO, b.normal(b.N, b.C)), ("lr", FLT, 0.1), ("momentum", FLT, 0.9),
                        ("dampening", FLT, 0.1), ("nesterov", BOOL, True), ("weight_decay", FLT, 0.01),
                        ("maximize", BOOL, False), ("first_step", BOOL, False)]),
    ]
    S["adagrad_step"] = [
        ("", lambda b: [("param", IO, b.normal(b.N, b.C)), ("grad", IN, b.normal(b.N, b.C)),
                        ("state_sum", IO, b.uniform(0, 1, b.N, b.C)), ("step", FLT, 3.0), ("lr", FLT, 0.01),
                        ("lr_decay", FLT, 0.01), ("weight_decay", FLT, 0.01), ("eps", FLT, 1e-10),
                        ("maximize", BOOL, False)]),
    ]
    S["rmsprop_step"] = [
        ("", lambda b: [("param", IO, b.normal(b.N, b.C)), ("grad", IN, b.normal(b.N, b.C)),
                        ("square_avg", IO, b.uniform(1, 2, b.N, b.C)), ("grad_avg", IO, b.uniform(-0.5, 0.5, b.N, b.C)),
                        ("momentum_buf", IO, b.normal(b.N, b.C)), ("lr", FLT, 0.01), ("alpha", FLT, 0.99),
                        ("eps", FLT, 1e-8), ("weight_decay", FLT, 0.01), ("momentum", FLT, 0.9),
                        ("centered", BOOL, True), ("maximize", BOOL, False)]),
    ]
    S["adam_step"] = [
        ("", lambda b: [("param", IO, b.normal(b.N, b.C)), ("grad", IN, b.normal(b.N, b.C)),
                        ("exp_avg", IO, b.normal(b.N, b.C)), ("exp_avg_sq", IO, b.uniform(0, 1, b.N, b.C)),
                        ("step", FLT, 3.0), ("lr", FLT, 1e-3), ("beta1", FLT, 0.9), ("beta2", FLT, 0.999),
                        ("eps", FLT, 1e-8), ("weight_decay", FLT, 0.01), ("decoupled_weight_decay", BOOL, True),
                        ("maximize", BOOL, False)]),
    ]
    S["set_num_threads"] = [("", lambda b: [("n", INT, 2)])]
    S["set_matmul_precision"] = [("", lambda b: [("precision", STR, "highest")])]
    for name in INFO_FUNCTIONS:
        S[name] = [("", lambda b: [])]
    return S


SPECS = _spec_table()


# ----------------------------------------------------------------- mutations
# Each mutation yields Case(desc, args, expect): args a list of (name, role,
# value) to call with keywords (or a tuple ("positional", values) for arity),
# expect one of:
#   "any"      return or TypeError / ValueError / IndexError
#   "same"     as "any", and if it returns, results equal the clean call's
#   "finite"   must return (NaN / Inf are data, not errors)

Case = collections.namedtuple("Case", "desc args expect")


def _replace(args, name, value):
    return [(n, r, value if n == name else v) for (n, r, v) in args]


def _arrays(args, roles=ARRAY_ROLES):
    return [(n, r, v) for (n, r, v) in args if r in roles and isinstance(v, np.ndarray)]


def _strided_copy(a):
    """A non-contiguous view holding a's values (every other element of the last axis)."""
    if a.ndim == 0:
        return None
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    view = big[..., ::2]
    view[...] = a
    return view


def _reversed_view(a):
    if a.ndim == 0 or a.shape[0] < 2:
        return None
    r = np.ascontiguousarray(a[::-1])
    return r[::-1]


def _unaligned_copy(a):
    """A C-contiguous but misaligned (address % itemsize != 0) copy of a."""
    n = a.size * a.itemsize
    buf = np.zeros(n + 1, np.uint8)
    u = buf[1:n + 1].view(a.dtype).reshape(a.shape)
    u[...] = a
    return u


def _byteswapped(a):
    return a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder in "=<|" else "<"))


def mutations(args, category, C):
    """Cases of one category for one valid call `args`."""
    arrays = _arrays(args)
    if category == "arity":
        values = [v for (_, _, v) in args]
        yield Case("no arguments", ("positional", []), "any")
        yield Case("one extra positional", ("positional", values + [np.zeros(3)]), "any")
        yield Case("two extra positionals", ("positional", values + [1, 2]), "any")
        if values:
            yield Case("first argument only", ("positional", values[:1]), "any")
            yield Case("all but the last", ("positional", values[:-1]), "any")
            yield Case("arguments reversed", ("positional", values[::-1]), "any")
        yield Case("unknown keyword", ("keywords", dict(((n, v) for (n, _, v) in args), bogus=1)), "any")
        return
    if category == "none":
        for (n, r, v) in args:
            yield Case(f"{n}=None", _replace(args, n, None), "any")
        return
    if category == "not_array":
        for (n, r, v) in arrays:
            for label, value in (("list", v.tolist()), ("float", 1.5), ("str", "abc"), ("dict", {"a": 1}),
                                 ("bytes", v.tobytes()), ("memoryview", memoryview(np.ascontiguousarray(v)))):
                yield Case(f"{n} as {label}", _replace(args, n, value), "any")
            if v.ndim == 2:
                yield Case(f"{n} as np.matrix", _replace(args, n, np.asmatrix(v)), "same")
            yield Case(f"{n} as masked array", _replace(args, n, np.ma.masked_array(v)), "same")
        return
    if category == "dtype":
        for (n, r, v) in arrays:
            other = "float32" if v.dtype == np.float64 else "float64"
            if r == LAB:
                targets = ["int32", "uint64", "int8", "float64", "float32", "bool", "object", "complex128"]
            else:
                targets = ["int32", "int64", "uint8", "float16", other, "complex64", "complex128", "bool",
                           "object", "longdouble", "datetime64[s]", "U3"]
            for t in targets:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        value = v.astype(t)
                    except (TypeError, ValueError):
                        value = np.zeros(v.shape, t)
                # one float array in the other float dtype: a mismatch to refuse, or (when it is
                # the only float array) a valid call in that dtype
                yield Case(f"{n} as {t}", _replace(args, n, value), "any" if t == other else "dtype")
        return
    if category == "byteswap":
        for (n, r, v) in arrays:
            yield Case(f"{n} byte-swapped {_byteswapped(v).dtype.str}", _replace(args, n, _byteswapped(v)), "same")
        return
    if category == "shape":
        for (n, r, v) in arrays:
            shapes = []
            if v.ndim >= 1:
                shapes += [(v.shape[0] + 1,) + v.shape[1:], (v.shape[-1] + 1,) if v.ndim == 1 else
                           v.shape[:-1] + (v.shape[-1] + 1,), (v.size,), (1,) + v.shape, v.shape + (1,)]
                if v.shape[0] > 1:
                    shapes.append((v.shape[0] - 1,) + v.shape[1:])
            if v.ndim == 2:
                shapes += [v.shape[::-1], (2,) + v.shape]
            for s in dict.fromkeys(shapes):
                if s == v.shape:
                    continue
                value = np.resize(v, s) if r != LAB else np.zeros(s, v.dtype)
                yield Case(f"{n} with shape {s}", _replace(args, n, value), "any")
        return
    if category == "zero_d":
        for (n, r, v) in arrays:
            yield Case(f"{n} 0-d", _replace(args, n, np.array(v.flat[0] if v.size else 0, v.dtype)), "any")
            yield Case(f"{n} numpy scalar", _replace(args, n, v.dtype.type(0)), "any")
        return
    if category == "empty_arg":
        for (n, r, v) in arrays:
            for s in ((0,), (0, 0), v.shape[:-1] + (0,) if v.ndim else (0,), (0,) + v.shape[1:]):
                if s != v.shape:
                    yield Case(f"{n} empty {s}", _replace(args, n, np.zeros(s, v.dtype)), "any")
        return
    if category == "int_range":
        for (n, r, v) in args:
            if r != LAB or not isinstance(v, np.ndarray) or v.size == 0:
                continue
            limit = C
            for bad in (-1, limit, limit + 1, 2 ** 31, -2 ** 31 - 1, 2 ** 62, -2 ** 63, 2 ** 63 - 1):
                for where in (0, -1):
                    value = v.copy()
                    value[where] = bad
                    yield Case(f"{n}[{where}]={bad}", _replace(args, n, value), "any")
        for (n, r, v) in args:
            if r == INT:
                for bad in (0, -1, -2 ** 31, 2 ** 31, 2 ** 63, -2 ** 63 - 1, 10 ** 30, 1.5, "2", True, np.int64(-5),
                            [2]):
                    yield Case(f"{n}={bad!r}", _replace(args, n, bad), "any")
        return
    if category == "threads_huge":
        for (n, r, v) in args:
            if r == INT:
                for bad in (64, 1000, 100000, 2 ** 31 - 1):
                    yield Case(f"{n}={bad!r} then a parallel kernel", _replace(args, n, bad), "any")
        return
    if category == "scalars":
        for (n, r, v) in args:
            if r == FLT:
                for bad in (math.nan, math.inf, -math.inf, 0.0, -1.0, 1e308, -1e308, 5e-324, 10 ** 400, -10 ** 400,
                            2 ** 64, "1", [1.0], 1j, np.float32(2), np.float64("nan"), np.int64(3), True):
                    yield Case(f"{n}={bad!r}", _replace(args, n, bad), "any")
            elif r == BOOL:
                for bad in (2, -1, 0.5, "yes", [], np.bool_(True), np.int64(1), 10 ** 30):
                    yield Case(f"{n}={bad!r}", _replace(args, n, bad), "any")
            elif r == STR:
                for bad in ("", "RELU", "gelu", "relu\x00", " relu", 5, b"relu", "\udcff", "x" * 10000):
                    yield Case(f"{n}={bad!r}", _replace(args, n, bad), "any")
        return
    if category == "strided":
        for (n, r, v) in arrays:
            variants = [("strided", _strided_copy(v)), ("reversed", _reversed_view(v))]
            if v.ndim == 2 and min(v.shape) > 1:
                variants.append(("fortran", np.asfortranarray(v)))
                variants.append(("transposed view", np.ascontiguousarray(v.T).T))
            for label, value in variants:
                if value is not None:
                    yield Case(f"{n} {label}", _replace(args, n, value), "same")
        return
    if category == "unaligned":
        for (n, r, v) in arrays:
            if v.itemsize > 1 and v.size:
                yield Case(f"{n} unaligned", _replace(args, n, _unaligned_copy(v)), "same")
        return
    if category == "readonly":
        for (n, r, v) in arrays:
            if r in (OUT, IO):
                value = v.copy()
                value.setflags(write=False)
                yield Case(f"{n} read-only", _replace(args, n, value), "same")
        return
    if category == "overlap":
        for (no, ro, vo) in arrays:
            if ro not in (OUT, IO):
                continue
            for (ni, ri, vi) in arrays:
                if ni == no or vi.dtype != vo.dtype or vi.size != vo.size or vi.size == 0:
                    continue
                if vi.shape == vo.shape:
                    yield Case(f"{no} is {ni}", [(n, r, vi if n == no else v) for (n, r, v) in args], "same")
                # Partial overlap: both views of one buffer, one element apart.
                for shift_out in (1, -1):
                    buf = np.zeros(vi.size + 1, vi.dtype)
                    vin = buf[:vi.size] if shift_out == 1 else buf[1:]
                    vout = buf[1:] if shift_out == 1 else buf[:vi.size]
                    vin = vin.reshape(vi.shape)
                    vin[...] = vi
                    vout = vout.reshape(vo.shape)
                    where = "after" if shift_out == 1 else "before"
                    yield Case(f"{no} overlaps {ni} (one element {where})",
                               [(n, r, vin if n == ni else vout if n == no else v) for (n, r, v) in args], "same")
        return
    if category == "nonfinite":
        for (n, r, v) in arrays:
            if r not in (IN, IO) or v.size == 0:
                continue
            big = np.finfo(v.dtype).max
            for label, fill in (("all NaN", lambda a: a.fill(np.nan)), ("one NaN", lambda a: a.flat.__setitem__(0, np.nan)),
                                ("+inf", lambda a: a.flat.__setitem__(-1, np.inf)),
                                ("-inf row", lambda a: a.__setitem__(0, -np.inf)),
                                ("all +inf", lambda a: a.fill(np.inf)),
                                ("huge", lambda a: a.fill(big)), ("tiny", lambda a: a.fill(np.finfo(a.dtype).tiny / 4))):
                value = v.copy()
                fill(value)
                yield Case(f"{n} {label}", _replace(args, n, value), "finite")
        return
    raise ValueError(category)


CATEGORIES = ("arity", "none", "not_array", "dtype", "byteswap", "shape", "zero_d", "empty_arg", "zero_size",
              "int_range", "threads_huge", "scalars", "strided", "unaligned", "readonly", "overlap",
              "nonfinite")


# ------------------------------------------------------------------ running

def _snapshot(args, result):
    """What a call produced: its return value and every out / in-place array."""
    def conv(x):
        if isinstance(x, np.ndarray):
            return np.array(x, dtype=x.dtype.newbyteorder("=") if x.dtype.kind in "fc" else x.dtype, copy=True)
        if isinstance(x, tuple):
            return tuple(conv(e) for e in x)
        return x
    arrays = {n: conv(v) for (n, r, v) in args if r in (OUT, IO) and isinstance(v, np.ndarray)}
    return conv(result), arrays


def _same(a, b):
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(map(_same, a, b))
    if a is None or b is None:
        return a is b
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind == "O" or b.dtype.kind == "O":
            return bool(np.all(a == b))
        with np.errstate(all="ignore"):
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            return bool(np.all((a64 == b64) | (np.isnan(a64) & np.isnan(b64))
                               | (np.abs(a64 - b64) <= 1e-6 * (1 + np.abs(b64)))))
    if isinstance(a, float) or isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) <= 1e-6 * (1 + abs(b))
    return a == b


def _clean_copy(args):
    """args with every array made a fresh, C-contiguous, native, private copy."""
    out = []
    for (n, r, v) in args:
        if isinstance(v, np.ndarray):
            dt = v.dtype.newbyteorder("=") if v.dtype.kind in "fciu" else v.dtype
            v = np.array(np.asarray(v), dtype=dt, order="C", copy=True)
        out.append((n, r, v))
    return out


_KEEP = []  # arrays whose refcounts a failed call may have corrupted: never freed


def _isolate(case_args, base):
    """case_args with every array that is (or views) an array of `base` replaced
    by a private copy, so that no call can change the base that later cases are
    derived from. Aliasing between arguments (x passed as out too) is kept."""
    base_arrays = [v for (_, _, v) in base if isinstance(v, np.ndarray)]
    memo = {}

    def iso(v):
        if not isinstance(v, np.ndarray) or v.dtype.kind == "O":
            return v
        if any(v is b for b in base_arrays):
            if id(v) not in memo:
                memo[id(v)] = v.copy()
            return memo[id(v)]
        if any(np.shares_memory(v, b) for b in base_arrays):
            c = v.copy()
            if not v.flags.writeable:
                c.setflags(write=False)
            return c
        return v

    if case_args and case_args[0] == "positional":
        return ("positional", [iso(v) for v in case_args[1]])
    if case_args and case_args[0] == "keywords":
        return ("keywords", {k: iso(v) for k, v in case_args[1].items()})
    return [(n, r, iso(v)) for (n, r, v) in case_args]


def _call(fn, args):
    if args and args[0] == "positional":
        return fn(*args[1])
    if args and args[0] == "keywords":
        return fn(**args[1])
    return fn(**{n: v for (n, _, v) in args})


def _describe_exc(exc):
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _names_an_argument(message, names):
    """Whether an error message names one of the function's arguments (as the
    keyword a caller would use). The argument named may be the other side of a
    mismatch: 'out must have shape (4, 7)' when x was changed is fine."""
    return any(re.search(r"(?<![A-Za-z0-9_])" + re.escape(n) + r"(?![A-Za-z0-9_])", message) for n in names)


def run_core_category(category, log):
    """Run every case of `category` against every _core function. Returns a summary dict."""
    from fastnn import _core

    calls = 0
    outcomes = collections.Counter()
    failures = []
    unnamed = []
    threads0 = _core.num_threads()

    for name, variants in SPECS.items():
        fn = getattr(_core, name)
        for vname, build in variants:
            dims_list = [DIMS]
            if category == "zero_size":
                dims_list = [dict(DIMS, **{k: 0}) for k in DIMS] + [dict(N=0, C=0, K=0)]
            for dims in dims_list:
                for dtype in (np.float32, np.float64):
                    bases = [build(Builder(dtype, dims, outs=True, seed=1))]
                    if category not in ("readonly", "overlap", "threads_huge"):
                        bases.append(build(Builder(dtype, dims, outs=False, seed=1)))
                    for base in bases:
                        if category == "zero_size":
                            outs = "given" if any(r == OUT and v is not None for (_, r, v) in base) else "None"
                            cases = iter([Case(f"dims={dims} outs={outs}", base, "any")])
                        else:
                            cases = mutations(base, category, dims["N"] if name in ROW_KERNELS else dims["C"])
                        for case in cases:
                            calls += 1
                            tag = f"{name}[{vname}] {np.dtype(dtype).name} {case.desc}"
                            log.write(tag + "\n")
                            log.flush()
                            args = _isolate(case.args, base)
                            try:
                                result = _call(fn, args)
                            except ALLOWED as exc:
                                outcomes[type(exc).__name__] += 1
                                if case.expect == "finite":
                                    failures.append(f"_core.{tag}: raised on non-finite data: {_describe_exc(exc)}")
                                if category not in ("arity", "zero_size") and not _names_an_argument(
                                        str(exc), [n for (n, _, _) in base]):
                                    unnamed.append(f"_core.{tag}: {_describe_exc(exc)}")
                                continue
                            except BaseException as exc:  # noqa: BLE001 - anything else is a failure
                                outcomes[type(exc).__name__] += 1
                                failures.append(f"_core.{tag}: raised {_describe_exc(exc)}")
                                continue
                            finally:
                                if name == "set_matmul_precision":
                                    _core.set_matmul_precision("highest")
                                if name == "set_num_threads":
                                    # a kernel must still run with whatever thread count was accepted
                                    try:
                                        _core.relu(np.zeros(1 << 16, np.float32))
                                    finally:
                                        _core.set_num_threads(threads0)
                            outcomes["returned"] += 1
                            if case.expect == "dtype":
                                mutated = case.desc.split(" as ")[0]
                                v = dict((n, v) for (n, _, v) in args)[mutated]
                                if name in ROW_KERNELS and mutated == "x" and v.dtype.kind != "O":
                                    # rows are bytes to these kernels: any plain dtype is valid
                                    want = v[dict((n, w) for (n, _, w) in args)["index"]] if name == "gather_rows" \
                                        else None
                                    if not (result is None if want is None else np.array_equal(result, want)):
                                        failures.append(f"_core.{tag}: wrong rows gathered")
                                    continue
                                failures.append(f"_core.{tag}: accepted dtype {v.dtype} for {mutated} "
                                                f"(returned {type(result).__name__}); expected TypeError")
                                if v.dtype.kind == "O":
                                    _KEEP.append((args, result))  # refcounts may be broken: keep alive
                                continue
                            if case.expect == "same":
                                got = _snapshot(args, result)
                                clean = _clean_copy(base)
                                try:
                                    want = _snapshot(clean, _call(fn, clean))
                                except ALLOWED as exc:
                                    failures.append(f"_core.{tag}: accepted, but the clean call raises "
                                                    f"{_describe_exc(exc)}")
                                    continue
                                if not _same(got[0], want[0]):
                                    failures.append(f"_core.{tag}: accepted, but returned a different result "
                                                    f"than the same call on clean copies")
                                for arr_name, arr in want[1].items():
                                    if arr_name in got[1] and not _same(got[1][arr_name], arr):
                                        failures.append(f"_core.{tag}: accepted, but {arr_name} differs from "
                                                        f"the same call on clean copies")
                                for (n, r, v) in args:
                                    if isinstance(v, np.ndarray) and not v.flags.writeable:
                                        original = dict((m, w) for (m, _, w) in base)[n]
                                        if not _same(np.asarray(v), original):
                                            failures.append(f"_core.{tag}: wrote into read-only {n}")
    gc.collect()
    return {"category": category, "calls": calls, "outcomes": dict(outcomes),
            "failures": failures, "unnamed": unnamed}


def _worker_main(argv):
    mode, categories, log_path = argv[0], argv[1], argv[2]
    with open(log_path, "w") as log:
        for category in categories.split(","):
            if mode == "--isa":
                summary = run_isa_checks(log)
            elif mode == "--core":
                summary = run_core_category(category, log)
            else:
                summary = run_functional_category(category, log)
            sys.stdout.write("SUMMARY " + json.dumps(summary) + "\n")
            sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: an accepted object-dtype call may have left
    # refcounts broken (reported as a failure above); do not let that crash here.
    os._exit(0)


def _run_worker(mode, categories, tmp_path, timeout=600):
    """Runs the categories in one subprocess. Returns (summaries, crash message or None)."""
    log = os.path.join(str(tmp_path), f"{mode.strip('-')}-{categories.split(',')[0]}.log")
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), mode, categories, log],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        proc = subprocess.CompletedProcess(exc.cmd, "TIMEOUT (a hang)", exc.stdout or "", exc.stderr or "")
        proc.stdout = proc.stdout.decode() if isinstance(proc.stdout, bytes) else proc.stdout
        proc.stderr = proc.stderr.decode() if isinstance(proc.stderr, bytes) else proc.stderr
    summaries = [json.loads(line[len("SUMMARY "):]) for line in proc.stdout.splitlines()
                 if line.startswith("SUMMARY ")]
    if proc.returncode != 0 or len(summaries) != len(categories.split(",")):
        last = ""
        if os.path.exists(log):
            with open(log) as f:
                lines = f.read().splitlines()
            last = lines[-1] if lines else ""
        return summaries, (f"{mode} {categories}: worker died ({_signal_name(proc.returncode)}) during call "
                           f"[{last}]\n--- stderr (tail) ---\n{proc.stderr[-3000:]}")
    return summaries, None


def _report(title, summaries, crashes):
    lines = [f"== {title} =="]
    total = 0
    for s in summaries:
        total += s["calls"]
        outcome = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items()))
        lines.append(f"  {s['category']:<11} {s['calls']:6d} calls  ({outcome})  failures: {len(s['failures'])}")
    lines.append(f"  total: {len(summaries)} categories, {total} calls, "
                 f"{sum(len(s['failures']) for s in summaries)} failures, {len(crashes)} crashed categories")
    return "\n".join(lines), total


def test_core_garbage_calls(tmp_path):
    """Every public _core function x every category of bad input, in subprocesses."""
    from fastnn import _core
    public = {n for n in dir(_core) if not n.startswith("_")}
    assert public == set(SPECS), (
        f"_core functions without a garbage-call spec: {sorted(public - set(SPECS))}; "
        f"specs for missing functions: {sorted(set(SPECS) - public)}")
    summaries, crashes = [], []
    for category in CATEGORIES:  # one subprocess each: a crash hides nothing else
        done, crash = _run_worker("--core", category, tmp_path)
        summaries += done
        if crash:
            crashes.append(crash)
    text, total = _report("_core garbage calls", summaries, crashes)
    print("\n" + text)
    failures = [f for s in summaries for f in s["failures"]]
    unnamed = {}
    for f in (f for s in summaries for f in s["unnamed"]):
        key = re.sub(r" float(32|64) ", " ", f).split(" ")[0:2]
        unnamed.setdefault(tuple(key), f)
    print(f"  {sum(len(s['unnamed']) for s in summaries)} errors name none of the function's keywords, e.g.:")
    for f in unnamed.values():
        print("    ", f[:200])
    assert len(summaries) + len(crashes) == len(CATEGORIES) and total > 0
    assert all(s["calls"] > 0 for s in summaries)
    problems = crashes + failures
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])


# ============================================================================
# Part 2: the same garbage at fastnn.functional, compared across backends
# ============================================================================

BACKEND_NAMES = ("numpy", "numba", "cpp")


def _functional_specs():
    """name -> build(b) -> [(name, role, value)] for the public functions."""
    S = collections.OrderedDict()
    for name in ("softmax", "log_softmax", "sigmoid", "tanh", "relu"):
        S[name] = lambda b: [("x", IN, b.normal(b.N, b.C)), ("out", OUT, b.out(b.N, b.C))]
    S["leaky_relu"] = lambda b: [("x", IN, b.normal(b.N, b.C)), ("negative_slope", FLT, 0.05),
                                 ("out", OUT, b.out(b.N, b.C))]
    S["elu"] = lambda b: [("x", IN, b.normal(b.N, b.C)), ("alpha", FLT, 0.7), ("out", OUT, b.out(b.N, b.C))]
    for name in ("sigmoid_backward", "tanh_backward", "relu_backward"):
        S[name] = lambda b: [("y", IN, b.uniform(0, 1, b.N, b.C)), ("dy", IN, b.normal(b.N, b.C))]
    S["leaky_relu_backward"] = lambda b: [("x", IN, b.normal(b.N, b.C)), ("dy", IN, b.normal(b.N, b.C)),
                                          ("negative_slope", FLT, 0.05)]
    S["elu_backward"] = lambda b: [("x", IN, b.normal(b.N, b.C)), ("dy", IN, b.normal(b.N, b.C)), ("alpha", FLT, 0.7)]
    for name in ("sum_squared_error", "sum_squared_error_backward"):
        S[name] = lambda b: [("y", IN, b.normal(b.N, b.C)), ("t", IN, b.normal(b.N, b.C))]
    for name in ("mean_squared_error", "mean_squared_error_backward"):
        S[name] = lambda b: [("y", IN, b.normal(b.N, b.C)), ("t", IN, b.normal(b.N, b.C)), ("reduction", STR, "mean")]
    for name in ("binary_cross_entropy", "binary_cross_entropy_backward"):
        S[name] = lambda b: [("p", IN, b.uniform(0.05, 0.95, b.N, b.C)), ("t", IN, b.uniform(0, 1, b.N, b.C)),
                             ("reduction", STR, "sum")]
    for name in ("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward"):
        S[name] = lambda b: [("z", IN, b.normal(b.N, b.C)), ("t", IN, b.uniform(0, 1, b.N, b.C)),
                             ("reduction", STR, "mean")]
    for name in ("cross_entropy_error", "cross_entropy_error_backward"):
        S[name] = lambda b: [("y", IN, b.simplex(b.N, b.C)), ("t", LAB, b.labels(b.N, b.C))]
    S["cross_entropy"] = lambda b: [("logits", IN, b.normal(b.N, b.C)), ("target", LAB, b.labels(b.N, b.C)),
                                    ("reduction", STR, "mean"), ("label_smoothing", FLT, 0.1)]
    S["softmax_cross_entropy"] = lambda b: [("logits", IN, b.normal(b.N, b.C)), ("target", LAB, b.labels(b.N, b.C)),
                                            ("reduction", STR, "none"), ("label_smoothing", FLT, 0.0),
                                            ("out", OUT, b.out(b.N, b.C))]
    S["matmul"] = lambda b: [("a", IN, b.normal(b.N, b.K)), ("b", IN, b.normal(b.K, b.C)), ("trans_a", BOOL, False),
                             ("trans_b", BOOL, False), ("out", OUT, b.out(b.N, b.C))]
    S["linear"] = lambda b: [("x", IN, b.normal(b.N, b.K)), ("W", IN, b.normal(b.K, b.C)), ("b", IN, b.normal(b.C)),
                             ("activation", STR, "tanh"), ("out", OUT, b.out(b.N, b.C))]
    S["linear_backward"] = lambda b: [("x", IN, b.normal(b.N, b.K)), ("W", IN, b.normal(b.K, b.C)),
                                      ("dy", IN, b.normal(b.N, b.C)), ("y", IN, b.uniform(-1, 1, b.N, b.C)),
                                      ("activation", STR, "tanh"), ("need_dx", BOOL, True)]
    S["gather_rows"] = lambda b: [("x", IN, b.normal(b.N, b.C)), ("index", LAB, b.labels(b.K, b.N)),
                                  ("out", OUT, b.out(b.K, b.C))]
    return S


FUNCTIONAL_SPECS = _functional_specs()
FUNCTIONAL_CATEGORIES = ("none", "not_array", "dtype", "byteswap", "shape", "zero_d", "empty_arg", "zero_size",
                         "int_range", "scalars", "strided", "readonly", "overlap", "nonfinite")
# Categories also run with every `out=` given (the others pass out=None).
_WITH_OUTS = ("none", "dtype", "byteswap", "shape", "strided", "readonly", "overlap")


def _clone(args):
    """A private copy of a call's arguments that keeps how they share memory
    (an out= that overlaps an input still does), so that each backend starts
    from the same data even when another one wrote through an alias."""
    if isinstance(args, tuple):
        return args
    owners = {}

    def owner_of(v):
        o = v
        while isinstance(o.base, np.ndarray):
            o = o.base
        return o

    out = []
    for (n, r, v) in args:
        if type(v) is np.ndarray and v.dtype.kind in "fciub":
            o = owner_of(v)
            if o.flags.c_contiguous and o.base is None and o.dtype.kind in "fciub":
                if id(o) not in owners:
                    owners[id(o)] = (o, o.copy())
                new_owner = owners[id(o)][1]
                offset = v.__array_interface__["data"][0] - o.__array_interface__["data"][0]
                w = np.ndarray(v.shape, v.dtype, buffer=new_owner.data, offset=offset, strides=v.strides)
                if not v.flags.writeable:
                    w.setflags(write=False)
                v = w
        out.append((n, r, v))
    return out





def _outcome(fn, args):
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return "ok", _call(fn, args)
    except ALLOWED as exc:
        return type(exc).__name__, str(exc)
    except BaseException as exc:  # noqa: BLE001
        return "BAD " + type(exc).__name__, str(exc)[:300]


def _close(a, b, tol):
    """Backend result a against the NumPy reference b (NaN where NaN, inf where inf)."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and \
            all(_close(x, y, tol) for x, y in zip(a, b))
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":
        return bool(np.array_equal(a, b))
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not np.array_equal(np.isnan(a64), np.isnan(b64)):
        return False
    fin = np.isfinite(b64)
    if not np.array_equal(a64[~fin & ~np.isnan(b64)], b64[~fin & ~np.isnan(b64)]):
        return False
    with np.errstate(all="ignore"):
        return bool(np.all(np.abs(a64[fin] - b64[fin]) <= tol * (1 + np.abs(b64[fin]))))


def _all_finite(result):
    if isinstance(result, tuple):
        return all(_all_finite(r) for r in result)
    if result is None:
        return True
    with np.errstate(all="ignore"):
        return bool(np.all(np.isfinite(np.asarray(result, dtype=np.float64))))


def run_functional_category(category, log):
    import fastnn
    import fastnn.functional as F

    calls = 0
    outcomes = collections.Counter()
    failures = []
    for name, build in FUNCTIONAL_SPECS.items():
        fn = getattr(F, name)
        dims_list = [DIMS] if category != "zero_size" else [dict(DIMS, **{k: 0}) for k in DIMS]
        for dims in dims_list:
            for dtype, outs in [(d, o) for d in (np.float32, np.float64)
                                for o in ((True,) if category in ("readonly", "overlap") else
                                          (False, True) if category in _WITH_OUTS else (False,))]:
                args = build(Builder(dtype, dims, outs=outs, seed=2))
                if category == "zero_size":
                    cases = [Case(f"dims={dims}", args, "any")]
                else:
                    C = dims["C"] if name != "gather_rows" else dims["N"]
                    cases = mutations(args, category, C)
                for case in cases:
                    if name == "gather_rows" and case.desc == "x as object":
                        continue  # crashes the cpp backend: see test_gather_rows_refuses_object_arrays
                    calls += 1
                    tag = f"F.{name} {np.dtype(dtype).name} {case.desc}"
                    log.write(tag + "\n")
                    log.flush()
                    results = {}
                    for backend in BACKEND_NAMES:
                        fastnn.set_backend(backend)
                        results[backend] = _outcome(fn, _clone(case.args))
                    kinds = {b: r[0] for b, r in results.items()}
                    for b, k in kinds.items():
                        outcomes[k] += 1
                        if k.startswith("BAD"):
                            failures.append(f"{tag}: backend {b} raised {k[4:]}: {results[b][1]}")
                    if len(set(kinds.values())) > 1:
                        failures.append(f"{tag}: backends disagree: " + "; ".join(
                            f"{b}: {k}" + (f" ({str(results[b][1])[:120]})" if k != "ok" else "")
                            for b, k in kinds.items()))
                        continue
                    # Targets far outside [0, 1] (1e308) only measure rounding: compare outcomes only.
                    # So do finfo.max inputs whose NumPy reference overflows in its own dtype (a
                    # float32 mean of values near 3e38 is inf; the others sum in float64).
                    skip_values = "huge" in case.desc and (case.desc.split(" ")[0] in ("t", "target") or (
                        kinds["numpy"] == "ok" and not _all_finite(results["numpy"][1])))
                    if kinds["numpy"] == "ok" and not skip_values:
                        # float32 precision if any float input has it (float16 is computed in float32)
                        low = any(isinstance(v, (np.ndarray, memoryview)) and np.asarray(v).dtype.kind == "f"
                                  and np.asarray(v).dtype.itemsize <= 4 for (_, _, v) in case.args)
                        tol = 2e-4 if low else 1e-9
                        for b in ("numba", "cpp"):
                            if not _close(results[b][1], results["numpy"][1], tol):
                                failures.append(f"{tag}: {b} result differs from the numpy reference")
                    if case.expect == "finite" and kinds["numpy"] != "ok":
                        failures.append(f"{tag}: raised on non-finite data ({kinds['numpy']})")
    return {"category": category, "calls": calls, "outcomes": dict(outcomes), "failures": failures, "unnamed": []}


def test_functional_garbage_same_on_every_backend(tmp_path):
    """fastnn.functional gives every backend the same garbage; the outcomes
    (exception class, or the result within tolerance of NumPy) must agree."""
    import fastnn.functional as F
    public = {n for n in dir(F) if not n.startswith("_") and callable(getattr(F, n))
              and getattr(getattr(F, n), "__module__", "") == F.__name__}
    helpers = {"as_float_array", "as_labels"}
    assert public - helpers == set(FUNCTIONAL_SPECS), sorted((public - helpers) ^ set(FUNCTIONAL_SPECS))
    # One subprocess for all categories: numba's import dominates, and known
    # crashes of the cpp backend are left to their own tests below.
    summaries, crashes = _run_worker("--functional", ",".join(FUNCTIONAL_CATEGORIES), tmp_path)
    crashes = [crashes] if crashes else []
    text, total = _report("fastnn.functional garbage calls x 3 backends", summaries, crashes)
    print("\n" + text)
    assert total > 0
    problems = crashes + [f for s in summaries for f in s["failures"]]
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:80])


# ============================================================================
# Part 3: targeted tests (each one a bug found by the harness, or a contract)
# ============================================================================

def _subprocess(code, env=None, timeout=300):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)


def _signal_name(rc):
    return f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"


def test_gather_rows_refuses_object_arrays():
    """_core.gather_rows memcpy's rows whatever their dtype; for an object array
    it copies PyObject pointers without a reference each, and freeing the
    result and x then frees the objects twice (a segfault). Object arrays must
    be refused with TypeError (or gathered with proper references)."""
    proc = _subprocess("""
        import gc, sys
        import numpy as np
        import fastnn, fastnn.functional as F
        from fastnn import _core
        fastnn.set_backend("cpp")

        class O:
            pass

        for where, call in (("_core.gather_rows", _core.gather_rows), ("F.gather_rows", F.gather_rows)):
            o = O()
            x = np.empty((2, 1), dtype=object)
            x[0, 0] = o
            x[1, 0] = O()
            before = sys.getrefcount(o)
            try:
                r = call(x, np.zeros(100, np.int64))
            except TypeError as exc:
                assert "x" in str(exc), exc
                continue
            got = sys.getrefcount(o) - before
            assert got == 100, f"{where}: the 100 gathered references to one object added {got} references"
            del r, x
            gc.collect()
        print("OK")
    """)
    assert proc.returncode == 0 and "OK" in proc.stdout, (
        f"{_signal_name(proc.returncode)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


@pytest.mark.parametrize("how", ["set_num_threads", "FASTNN_NUM_THREADS"])
def test_huge_thread_count_does_not_crash(how):
    """fastnn.set_num_threads(n) / FASTNN_NUM_THREADS=n accept any n >= 1 and
    the next parallel kernel asks OpenMP for n threads: n = 100000 segfaults in
    libgomp, n = 2**31 - 1 makes libgomp exit the process ('Out of memory
    allocating ... bytes'). A huge n must be refused (ValueError) or capped."""
    for n in (100000, 2 ** 31 - 1):
        code = f"""
            import numpy as np
            import fastnn, fastnn.functional as F
            fastnn.set_backend("cpp")
            try:
                if {how == "set_num_threads"}:
                    fastnn.set_num_threads({n})
            except ValueError:
                print("refused")
            F.relu(np.zeros(1 << 16, np.float32))
            F.matmul(np.ones((256, 256), np.float32), np.ones((256, 256), np.float32))
            print("OK", fastnn.info()["threads"])
        """
        env = {"FASTNN_NUM_THREADS": str(n)} if how == "FASTNN_NUM_THREADS" else {}
        proc = _subprocess(code, env=env, timeout=120)
        assert proc.returncode == 0 and "OK" in proc.stdout, (
            f"n={n}: {_signal_name(proc.returncode)}\n{proc.stdout[-1000:]}\n{proc.stderr[-2000:]}")


@pytest.fixture(params=BACKEND_NAMES)
def any_backend(request):
    import fastnn
    previous = fastnn.backend()
    fastnn.set_backend(request.param)
    yield request.param
    fastnn.set_backend(previous)


def _overlapping(x, shift):
    """(x2, out): x2 holds x's values and out is x2's shape, one buffer, `shift` elements apart."""
    buf = np.zeros(x.size + 1, x.dtype)
    x2 = (buf[:x.size] if shift > 0 else buf[1:]).reshape(x.shape)
    out = (buf[1:] if shift > 0 else buf[:x.size]).reshape(x.shape)
    x2[...] = x
    return x2, out


_OUT_FUNCTIONS = ["softmax", "log_softmax", "sigmoid", "tanh", "relu", "leaky_relu", "elu"]


@pytest.mark.parametrize("fname", _OUT_FUNCTIONS)
@pytest.mark.parametrize("alias", ["out is x", "out one element after x", "out one element before x"])
def test_out_overlapping_input_is_in_place_or_refused(any_backend, fname, alias):
    """F.<f>(x, out=buf) where buf shares memory with x: out = x itself gives
    exactly the out-of-place result; a partial overlap raises ValueError on
    every backend. (Regression: cpp and numba used to write through the alias
    before reading it -- log_softmax with out=x, every elementwise kernel with
    out one element after x.)"""
    import fastnn.functional as F
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 37)).astype(np.float32)
    want = getattr(F, fname)(x.copy())
    if alias == "out is x":
        x2 = x.copy()
        out = x2
    else:
        x2, out = _overlapping(x, 1 if "after" in alias else -1)
        with pytest.raises(ValueError, match="memory"):
            getattr(F, fname)(x2, out=out)
        return
    got = getattr(F, fname)(x2, out=out)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7,
                               err_msg=f"F.{fname}(x, out=<{alias}>) on {any_backend}")


@pytest.mark.parametrize("alias", ["out is logits", "out one element after logits"])
def test_softmax_cross_entropy_out_aliasing_logits(any_backend, alias):
    """softmax_cross_entropy(logits, t, out=logits) (an in-place gradient, which
    saves memory and looks legitimate) is refused with ValueError on every
    backend, as is a partial overlap, and logits are left as they were.
    (Regression: the cpp kernel wrote exp(z - max) into dlogits and then read
    z[label] from it, giving a wrong loss; numba too.)"""
    import fastnn.functional as F
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((6, 11))
    t = rng.integers(0, 11, 6)
    if alias == "out is logits":
        lg = logits.copy()
        out = lg
    else:
        lg, out = _overlapping(logits, 1)
    with pytest.raises(ValueError, match="memory"):
        F.softmax_cross_entropy(lg, t, out=out)
    np.testing.assert_array_equal(lg, logits)


def test_core_outputs_overlapping_inputs():
    """Every _core output that shares memory with an input it is not meant to
    overwrite is refused with ValueError: partial overlaps everywhere, and the
    logits as cross-entropy's dlogits. log_softmax(x, out=x), which is meant
    to work in place, gives the result of the call on separate arrays.
    (Regressions: the elementwise kernels, log_softmax and cross_entropy's
    dlogits accepted partial overlaps and computed garbage, and so did
    linear_backward with a dz_out one element off dy.)"""
    from fastnn import _core
    rng = np.random.default_rng(5)
    n = 64
    problems = []

    def refused(what, call):
        try:
            call()
        except ValueError as exc:
            if "memory" not in str(exc):
                problems.append(f"{what}: refused for another reason: {exc}")
        else:
            problems.append(f"{what}: accepted")

    x = rng.standard_normal(n)
    for name in ("relu", "sigmoid", "tanh", "leaky_relu", "elu"):
        x2, out = _overlapping(x, 1)
        refused(f"_core.{name}(x, out=x shifted by one element)", lambda: getattr(_core, name)(x2, out=out))
    y = rng.uniform(0.1, 0.9, n)
    for name in ("relu_backward", "sigmoid_backward", "tanh_backward"):
        dy2, out = _overlapping(y * 2 - 1, 1)
        refused(f"_core.{name}(y, dy, out=dy shifted)", lambda: getattr(_core, name)(y, dy2, out=out))
    t = rng.uniform(0, 1, n)
    for name in ("squared_error_backward", "binary_cross_entropy_backward", "binary_cross_entropy_with_logits_backward"):
        p2, out = _overlapping(y, 1)
        refused(f"_core.{name}(p, t, 0.5, out=p shifted)", lambda: getattr(_core, name)(p2, t, 0.5, out))
    X = rng.standard_normal((4, 9))
    X2 = X.copy()
    got = _core.log_softmax(X2, out=X2)
    assert got is X2
    np.testing.assert_allclose(X2, _core.log_softmax(X.copy()), rtol=1e-12, atol=1e-15)
    labels = rng.integers(0, 9, 4)
    X3 = X.copy()
    refused("_core.cross_entropy(logits, t, dlogits=logits)", lambda: _core.cross_entropy(X3, labels, 0.0, None, X3))
    refused("_core.softmax_cross_entropy(logits, t, out=logits)",
            lambda: _core.softmax_cross_entropy(X3, labels, "mean", 0.0, X3))
    np.testing.assert_array_equal(X3, X)
    xb, W, dy = rng.standard_normal((4, 3)), rng.standard_normal((3, 9)), rng.standard_normal((4, 9))
    yb = np.maximum(rng.standard_normal((4, 9)), 0)
    dy2, dz = _overlapping(dy, 1)
    refused("_core.linear_backward(..., dz_out=dy shifted by one element)",
            lambda: _core.linear_backward(xb, W, dy2, yb, "relu", dz_out=dz))
    assert not problems, "overlapping outputs not refused:\n" + "\n".join(problems)


@pytest.mark.parametrize("base", [1e4, -3e4])
def test_log_softmax_and_cross_entropy_keep_precision_for_large_logits(any_backend, base):
    """log_softmax(x) = (x - max) - log(sum exp(x - max)): the shift must be
    subtracted first. (Regression: the cpp kernel computed x - (max + log(sum))
    and the loss as (max + log(sum)) - z[label], rounding max + log(sum) to
    float32's grid at |max|: an error of ~4e-4 at |x| ~ 1e4.)"""
    import fastnn.functional as F
    from fastnn import backends
    x = (base + np.array([[0.0, 1.0, 2.0, 0.5], [3.0, -1.0, 0.25, 2.0]])).astype(np.float32)
    ref = backends.load("numpy").log_softmax(x.astype(np.float64))
    np.testing.assert_allclose(F.log_softmax(x), ref, atol=2e-6, err_msg=f"log_softmax on {any_backend}")
    labels = np.array([2, 0])
    want = -ref[np.arange(2), labels].mean()
    assert F.cross_entropy(x, labels) == pytest.approx(want, abs=2e-6), f"cross_entropy on {any_backend}"
    loss, _ = F.softmax_cross_entropy(x, labels)
    assert loss == pytest.approx(want, abs=2e-6), f"softmax_cross_entropy on {any_backend}"


def test_cross_entropy_of_huge_float64_logits_is_finite(any_backend):
    """Found: the numba kernel (_ce_rows) sums a row's raw logits
    (sum_x += x[i, j]) and subtracts C * max afterwards; for float64 logits
    near the top of the range that sum overflows and inf - inf makes the loss
    NaN (with label_smoothing: -inf) where numpy and cpp give log(C)."""
    import fastnn.functional as F
    x = np.full((2, 7), 1e308)
    for smoothing in (0.0, 0.1):
        loss = F.cross_entropy(x, np.array([0, 3]), label_smoothing=smoothing)
        assert loss == pytest.approx(np.log(7), rel=1e-12), (any_backend, smoothing, loss)
        loss, grad = F.softmax_cross_entropy(x, np.array([0, 3]), reduction="none", label_smoothing=smoothing)
        np.testing.assert_allclose(loss, np.log(7), rtol=1e-12, err_msg=f"{any_backend} smoothing={smoothing}")


def test_gather_rows_empty_index_on_every_backend(any_backend):
    """An empty index gives an empty (0, D) batch. (Regression: numba's
    gather_rows used reshape(0, -1), which NumPy refuses.)"""
    import fastnn.functional as F
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert F.gather_rows(x, np.array([], np.int64)).shape == (0, 3)
    assert F.gather_rows(np.zeros((0, 3), np.float32), np.array([], np.int64)).shape == (0, 3)


@pytest.mark.parametrize("dtype", ["float16", "longdouble", ">f4", ">f8", "int32", "bool"])
def test_gather_rows_any_dtype_on_every_backend(any_backend, dtype):
    """F.gather_rows passes x of any dtype to the backend. Found: numba raises
    NotImplementedError (float16) or numba's TypingError (longdouble,
    byte-swapped) where numpy and cpp gather the rows."""
    import fastnn.functional as F
    x = np.arange(12).reshape(4, 3).astype(dtype)
    idx = np.array([3, 0, 3])
    try:
        got = F.gather_rows(x, idx)
    except TypeError:
        pytest.fail(f"{any_backend}: F.gather_rows refuses dtype {dtype} (numpy and cpp gather it)")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{any_backend}: F.gather_rows on dtype {dtype} raised {type(exc).__name__}: {str(exc)[:200]}")
    np.testing.assert_array_equal(got, x[idx])


@pytest.mark.parametrize("bad_out", ["float16 dtype", "other float dtype", "wrong shape", "strided", "list"])
def test_gather_rows_checks_out_like_every_backend(any_backend, bad_out):
    """A bad out= is refused the same way on every backend. (Regression:
    F.gather_rows used to hand out= to the backend unchecked: cpp refused it,
    numpy sometimes cast into it, numba silently wrote a cast copy into it.)"""
    import fastnn.functional as F
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    idx = np.array([1, 2])
    out = {"float16 dtype": np.zeros((2, 3), np.float16), "other float dtype": np.zeros((2, 3), np.float32),
           "wrong shape": np.zeros((1, 2, 3)), "strided": np.zeros((2, 6))[:, ::2], "list": [[0.0] * 3] * 2}[bad_out]
    with pytest.raises((TypeError, ValueError), match="out"):
        F.gather_rows(x, idx, out=out)


@pytest.mark.parametrize("fname, param", [("leaky_relu", "negative_slope"), ("elu", "alpha"),
                                          ("cross_entropy", "label_smoothing")])
def test_huge_integer_scalar_is_a_value_error(fname, param):
    """Found: functional._check_number calls float(value) unguarded, so a
    Python int beyond float range raises OverflowError ('int too large to
    convert to float') instead of the documented TypeError / ValueError."""
    import fastnn.functional as F
    x = np.zeros((2, 3))
    args = (x, np.array([0, 1])) if fname == "cross_entropy" else (x,)
    with pytest.raises((TypeError, ValueError), match=param):
        getattr(F, fname)(*args, **{param: 10 ** 400})


@pytest.mark.parametrize("flag", [[], [1], "yes", 2, None])
def test_matmul_trans_flag_same_on_every_backend(flag):
    """F.matmul passes trans_a / trans_b through unchecked: numpy and numba
    take their truthiness ([] is False, 'yes' is True), cpp's pybind11 bool
    refuses a list or a string (TypeError) and takes None as False. One
    behaviour is needed (e.g. require a bool)."""
    import fastnn
    import fastnn.functional as F
    a = np.arange(6.0).reshape(2, 3)
    b = np.arange(6.0).reshape(2, 3) if bool(flag) else np.arange(6.0).reshape(3, 2)
    outcomes = {}
    previous = fastnn.backend()
    try:
        for backend in BACKEND_NAMES:
            fastnn.set_backend(backend)
            try:
                outcomes[backend] = ("ok", F.matmul(a, b, trans_b=flag).tolist())
            except ALLOWED as exc:
                outcomes[backend] = (type(exc).__name__,)
    finally:
        fastnn.set_backend(previous)
    assert len(set(map(str, outcomes.values()))) == 1, outcomes


def test_core_linear_backward_messages_use_the_keyword_names():
    """_core.linear_backward's outputs are the keywords dx_out, dW_out, db_out
    and dz_out, but its messages call them dx, dW, db and dz."""
    from fastnn import _core
    x, W, dy = np.ones((2, 3)), np.ones((3, 4)), np.ones((2, 4))
    for kw, shape in (("dx_out", (2, 3)), ("dW_out", (3, 4)), ("db_out", (4,)), ("dz_out", (2, 4))):
        with pytest.raises(ValueError) as info:
            _core.linear_backward(x, W, dy, np.ones((2, 4)), "relu", **{kw: np.ones(shape + (1,))})
        assert kw in str(info.value), f"{kw}: {info.value}"


def test_core_linear_backward_names_a_bad_x_activation():
    from fastnn import _core
    x, W, dy = np.ones((2, 3)), np.ones((3, 4)), np.ones((2, 4))
    with pytest.raises(ValueError, match="x_activation must be one of .* got 'softmax'"):
        _core.linear_backward(x, W, dy, x_activation="softmax")
    with pytest.raises(TypeError):
        _core.linear_backward(x, W, dy, x_activation=1)


# ------------------------------------------------------- the functional contract

def test_integer_and_bool_input_is_converted_explicitly(any_backend):
    """Integers and bools become float64 (as NumPy would compute them), never
    reinterpreted bit for bit; lists work too."""
    import fastnn.functional as F
    xi = np.array([[-2, 3, 0], [5, -1, 7]], dtype=np.int32)
    got = F.relu(xi)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.maximum(xi, 0))
    np.testing.assert_array_equal(F.relu(xi.tolist()), np.maximum(xi, 0))
    np.testing.assert_allclose(F.softmax(xi), F.softmax(xi.astype(np.float64)), rtol=1e-12)
    np.testing.assert_array_equal(F.matmul(xi, xi.T), (xi @ xi.T).astype(np.float64))
    assert F.matmul(xi.astype(np.int64), xi.T.astype(np.int64)).dtype == np.float64
    np.testing.assert_array_equal(F.sigmoid(np.array([True, False])), F.sigmoid(np.array([1.0, 0.0])))
    # a float32 weight meets an int input at float32 (the weight's dtype) in linear
    W = np.ones((3, 2), np.float32)
    assert F.linear(xi, W).dtype == np.float64  # x decides: ints convert to float64, W follows x


@pytest.mark.parametrize("bad", ["complex", "object", "str", "datetime", "None", "string"])
def test_non_numeric_input_is_refused_naming_the_argument(any_backend, bad):
    import fastnn.functional as F
    value = {"complex": np.ones((2, 3), complex), "object": np.array([[object()] * 3] * 2, dtype=object),
             "str": np.array([["a"] * 3] * 2), "datetime": np.zeros((2, 3), "datetime64[s]"),
             "None": None, "string": "abc"}[bad]
    with pytest.raises(TypeError, match=r"\bx\b"):
        F.relu(value)
    with pytest.raises(TypeError, match=r"\blogits\b"):
        F.softmax_cross_entropy(value, np.array([0, 1]))
    with pytest.raises(TypeError, match=r"\bW\b"):
        F.linear(np.ones((2, 3)), value)


def test_strided_views_give_the_contiguous_result(any_backend):
    import fastnn.functional as F
    rng = np.random.default_rng(6)
    big = rng.standard_normal((8, 40)).astype(np.float32)
    for view in (big[:, ::2], big[::2], big.T, big[::-1, ::-3], np.asfortranarray(big)):
        c = np.ascontiguousarray(view)
        for fname in ("softmax", "log_softmax", "relu", "tanh"):
            np.testing.assert_array_equal(getattr(F, fname)(view), getattr(F, fname)(c))
        W = rng.standard_normal((view.shape[1], 5)).astype(np.float32)
        np.testing.assert_array_equal(F.linear(view, W), F.linear(c, W))
        np.testing.assert_array_equal(F.matmul(view, W[::1]), F.matmul(c, W))
        labels = rng.integers(0, view.shape[1], view.shape[0])
        la, ga = F.softmax_cross_entropy(view, labels[::1])
        lb, gb = F.softmax_cross_entropy(c, labels)
        assert la == lb
        np.testing.assert_array_equal(ga, gb)
        strided_labels = np.repeat(labels, 2)[::2]
        assert F.cross_entropy(view, strided_labels) == F.cross_entropy(c, labels)


def test_labels_are_checked(any_backend):
    import fastnn.functional as F
    logits = np.zeros((3, 4))
    for fn in (F.cross_entropy, lambda z, t: F.softmax_cross_entropy(z, t)[0], F.cross_entropy_error):
        assert np.isfinite(fn(logits + 0.25, np.array([0, 3, 1], np.int32)))
        assert np.isfinite(fn(logits + 0.25, np.array([0, 3, 1], np.uint8)))
        for bad in ([0, 4, 1], [-1, 0, 0], [0, 0, 2 ** 62], np.array([0, 0, 2 ** 64 - 1], np.uint64)):
            with pytest.raises(IndexError, match="out of range"):
                fn(logits + 0.25, np.asarray(bad))
        for bad in ([0, 1], [0, 1, 2, 3], [[0, 1, 2]]):  # count != N
            with pytest.raises(ValueError):
                fn(logits + 0.25, np.asarray(bad))
        with pytest.raises((TypeError, ValueError)):
            fn(logits + 0.25, np.array([0.0, 1.0, 2.0]))  # float labels are not labels
        with pytest.raises((TypeError, ValueError)):
            fn(logits + 0.25, np.array(["a", "b", "c"]))


@pytest.mark.parametrize("fname", ["cross_entropy", "softmax_cross_entropy", "cross_entropy_error",
                                   "mean_squared_error", "binary_cross_entropy",
                                   "binary_cross_entropy_with_logits"])
def test_empty_batch_mean_loss_is_a_value_error(any_backend, fname):
    """A mean over no samples is undefined: every backend raises the same ValueError."""
    import fastnn.functional as F
    z = np.zeros((0, 4))
    target = np.zeros(0, np.int64) if "entropy" in fname and "binary" not in fname else np.zeros((0, 4))
    with pytest.raises(ValueError, match="empty|no rows"):
        getattr(F, fname)(z, target)


def test_empty_batch_kernels_return_empty_results(any_backend):
    import fastnn.functional as F
    x = np.zeros((0, 4), np.float32)
    W = np.ones((4, 3), np.float32)
    for fname in ("softmax", "log_softmax", "relu", "sigmoid", "tanh"):
        assert getattr(F, fname)(x).shape == (0, 4)
    assert F.linear(x, W, np.ones(3, np.float32), activation="relu").shape == (0, 3)
    assert F.matmul(x, W).shape == (0, 3)
    dx, dW, db = F.linear_backward(x, W, np.zeros((0, 3), np.float32))
    assert dx.shape == (0, 4) and np.array_equal(dW, np.zeros((4, 3))) and np.array_equal(db, np.zeros(3))
    assert F.mean_squared_error(x, x, reduction="sum") == 0.0
    assert F.mean_squared_error(x, x, reduction="none").shape == (0, 4)


def test_nan_and_inf_propagate(any_backend):
    import fastnn.functional as F
    x = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0], [np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf]])
    with np.errstate(all="ignore"):
        s = F.softmax(x)
        assert np.isnan(s[0]).all() and np.isfinite(s[1]).all()
        assert np.isnan(s[3]).all()  # exp(-inf - -inf): undefined, as in NumPy
        assert np.isnan(F.relu(np.array([np.nan]))).all()
        assert np.isnan(F.cross_entropy(x[:2], np.array([0, 1])))
        loss, grad = F.softmax_cross_entropy(x[:2], np.array([0, 1]), reduction="none")
        assert np.isnan(loss[0]) and np.isfinite(loss[1]) and np.isnan(grad[0]).all() and np.isfinite(grad[1]).all()
        y = F.matmul(np.array([[np.inf, 1.0]]), np.array([[1.0], [1.0]]))
        assert y[0, 0] == np.inf
        y = F.linear(np.array([[np.nan, 1.0]]), np.ones((2, 3)), activation="relu")
        assert np.isnan(y).all()


# ------------------------------------------------------------------ ISA paths

ISAS = ("generic", "avx2", "avx512", "avx512_bf16")


def run_isa_checks(log):
    """Every F kernel on the cpp backend against the NumPy reference, over
    shapes that hit each vector width's tails (1, 7, 17, 33, 129 columns)."""
    import fastnn
    import fastnn.functional as F
    fastnn.set_backend("cpp")
    want = os.environ.get("FASTNN_ISA")
    assert fastnn.info()["isa"] == want, (fastnn.info()["isa"], want)
    failures, calls = [], 0
    for dims in (dict(N=1, C=1, K=1), dict(N=3, C=7, K=5), dict(N=17, C=33, K=9), dict(N=64, C=129, K=70),
                 dict(N=130, C=17, K=300)):
        for name, build in FUNCTIONAL_SPECS.items():
            for dtype in (np.float32, np.float64):
                args = build(Builder(dtype, dims, outs=False, seed=7))
                results = {}
                for backend in ("numpy", "cpp"):
                    fastnn.set_backend(backend)
                    results[backend] = _outcome(getattr(F, name), args)
                calls += 1
                log.write(f"{name} {dims} {np.dtype(dtype).name}\n")
                tol = 2e-4 if dtype == np.float32 else 1e-9
                if results["numpy"][0] != results["cpp"][0] or (
                        results["numpy"][0] == "ok" and not _close(results["cpp"][1], results["numpy"][1], tol)):
                    failures.append(f"F.{name} {dims} {np.dtype(dtype).name}: cpp {results['cpp'][0]} vs "
                                    f"numpy {results['numpy'][0]}")
    return {"category": f"isa-{want}", "calls": calls, "outcomes": {}, "failures": failures, "unnamed": []}


@pytest.mark.parametrize("isa", ISAS)
def test_isa_paths(isa, tmp_path):
    """FASTNN_ISA=<isa> in a subprocess: the path is really taken and every
    kernel agrees with the NumPy reference. Below the CPU's best path, the cpp
    cases of tests/test_functional.py run on this path too."""
    from fastnn import _core
    if ISAS.index(_core.cpu_isa()) < ISAS.index(isa):
        pytest.skip(f"this CPU lacks {isa} (best: {_core.cpu_isa()})")
    log = os.path.join(str(tmp_path), "isa.log")
    env = dict(os.environ, FASTNN_ISA=isa)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--isa", isa, log], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    summaries = [json.loads(line[8:]) for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert proc.returncode == 0 and summaries, f"{_signal_name(proc.returncode)}\n{proc.stderr[-3000:]}"
    assert summaries[0]["calls"] > 0
    assert not summaries[0]["failures"], "\n".join(summaries[0]["failures"])
    functional_tests = os.path.join(HERE, "test_functional.py")
    if isa == _core.cpu_isa():
        return  # the main test run already covers the CPU's best path
    failed = _pytest_failures([functional_tests, "-k", "cpp"], env)
    if failed:
        # Only failures that the default path does not share are this path's.
        default_env = {k: v for k, v in os.environ.items() if k != "FASTNN_ISA"}
        also_default = _pytest_failures(failed, default_env)
        only_here = sorted(set(failed) - set(also_default))
        assert not only_here, f"tests/test_functional.py fails only with FASTNN_ISA={isa}:\n" + "\n".join(only_here)


def _pytest_failures(args, env):
    """The ids of the tests that fail or error in a pytest run of `args`, which must collect some."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *args], env=env,
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode != pytest.ExitCode.NO_TESTS_COLLECTED, f"pytest {args} collected no tests"
    assert proc.returncode in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), \
        proc.stdout[-3000:] + proc.stderr[-2000:]
    return [line.split()[1] for line in proc.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]

if __name__ == "__main__":
    _worker_main(sys.argv[1:])
