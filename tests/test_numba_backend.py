"""The Numba backend against the NumPy reference, plus what is Numba's own:
the cache-directory fallback for read-only installs, NaN/Inf propagation
through the hand-written exp/tanh, and serial vs parallel kernels agreeing to
the bit."""
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import zlib

import numba
import numpy as np
import pytest

from fastnn import backends
from fastnn.backends import numba_backend as nb
from fastnn.backends import numpy_backend as ref
from fastnn.backends.numba_backend import _common, _parallel, activations, linear_ops, losses, vmath

SHAPES = [(1, 1), (7, 3), (33, 10), (257, 1000)]  # the last runs the parallel drivers


@pytest.fixture(autouse=True)
def parallel_from_test_sizes(monkeypatch):
    """The backend splits only work of a few ms (its thresholds are set for a
    training loop that shares the cores with OpenBLAS); here the parallel
    drivers start at the sizes these tests use, so that their larger shapes
    take them."""
    for kind, value in (("elementwise", 1 << 17), ("transcendental", 1 << 15), ("rows", 1 << 14),
                        ("gather", 1 << 17), ("optimizer", 1 << 16)):
        monkeypatch.setitem(_parallel.PAR_MIN, kind, value)
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-6, np.float64: 1e-12}
ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")


def _rng(*key):
    # str hashes change between processes; crc32 of the repr does not
    return np.random.default_rng([20240611, zlib.crc32(repr(key).encode())])


def assert_rel(actual, expected, dtype, factor=1.0):
    """Elementwise relative agreement (for results with no cancellation)."""
    assert np.asarray(actual).dtype == np.asarray(expected).dtype
    tiny = np.finfo(dtype).tiny  # subnormal results carry few significant bits
    np.testing.assert_allclose(actual, expected, rtol=factor * RTOL[dtype], atol=4 * tiny)


def assert_scaled(actual, expected, dtype, factor=1.0):
    """Agreement relative to the array's magnitude: for sums and for gradients
    that cancel (p - t), where the reference's own rounding dominates."""
    expected = np.asarray(expected)
    assert np.asarray(actual).dtype == expected.dtype
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    tol = factor * RTOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def assert_loss(actual, expected, dtype, factor=2.0):
    """A reduced loss is a Python float; 'none' gives an array in the dtype."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray) and actual.dtype == expected.dtype
        assert actual.shape == expected.shape
        assert_scaled(actual, expected, dtype, factor)
    else:
        assert type(actual) is float and type(expected) is float
        if math.isnan(expected):
            assert math.isnan(actual)
        else:
            assert actual == pytest.approx(expected, rel=factor * RTOL[dtype], abs=factor * RTOL[dtype])


def data(shape, dtype, *key, scale=3.0):
    return (_rng(shape, dtype, *key).standard_normal(shape) * scale).astype(dtype)


def probs(shape, dtype, *key):
    return ref.softmax(data(shape, dtype, "p", *key))


def labels(shape, *key):
    return _rng(shape, "labels", *key).integers(0, shape[1], shape[0]).astype(np.int64)


# ----------------------------------------------------------------- the interface

def _public(module):
    return {k: v for k, v in vars(module).items()
            if not k.startswith("_") and not inspect.ismodule(v)}


def test_public_interface_matches_reference():
    ours, theirs = _public(nb), _public(ref)
    assert set(ours) == set(theirs)
    assert nb.NAME == "numba"
    assert nb.FUSED_ACTIVATIONS == ref.FUSED_ACTIVATIONS
    for name, fn in theirs.items():
        if callable(fn):
            assert inspect.signature(ours[name]) == inspect.signature(fn), name


def test_imports_without_the_rest_of_fastnn():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import numba_backend; "
            "print(sorted(m for m in sys.modules if m.startswith('fastnn')))")
    out = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.dirname(nb.__file__))],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------ softmax family

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family(name, shape, dtype):
    x = data(shape, dtype, name)
    expected = getattr(ref, name)(x)
    got = getattr(nb, name)(x)
    if name == "softmax":
        assert_rel(got, expected, dtype, factor=2)
    else:  # log p = (x - m) - lse: a 1-ulp change of lse is large next to log p ~ 0
        assert_scaled(got, expected, dtype, factor=2)
    out = np.full_like(x, np.nan)
    assert getattr(nb, name)(x, out=out) is out
    np.testing.assert_array_equal(out, got)
    inplace = x.copy()
    assert getattr(nb, name)(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, got)


def test_softmax_non_contiguous_out_is_filled():
    x = data((6, 5), np.float64, "nc")
    out = np.zeros((5, 6)).T  # F-ordered view
    assert nb.softmax(x, out=out) is out
    np.testing.assert_array_equal(out, nb.softmax(x))


def test_softmax_extreme_logits_stay_finite():
    x = np.array([[1e4, 0.0, -1e4], [-1e30, -1e30 + 1e15, 1e30], [88.0, 89.0, 90.0]])
    for dtype in DTYPES:
        xx = x.astype(dtype)
        assert_rel(nb.softmax(xx), ref.softmax(xx), dtype, factor=2)
        assert_scaled(nb.log_softmax(xx), ref.log_softmax(xx), dtype, factor=2)
        assert np.all(np.isfinite(nb.log_softmax(xx)))


# --------------------------------------------------------------- activations

FORWARD = {"sigmoid": {}, "tanh": {}, "relu": {}, "leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 0.7}}
BIT_EXACT_BACKWARD = ("sigmoid_backward", "tanh_backward", "relu_backward", "leaky_relu_backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_activation(name, shape, dtype):
    kw = FORWARD[name]
    x = data(shape, dtype, name)
    dy = data(shape, dtype, name, "dy", scale=1.0)
    for kwargs in ({}, kw):
        y = getattr(nb, name)(x, **kwargs)
        if name in ("relu", "leaky_relu"):
            np.testing.assert_array_equal(y, getattr(ref, name)(x, **kwargs))
        else:
            assert_rel(y, getattr(ref, name)(x, **kwargs), dtype, factor=2)
        # backward takes y for sigmoid/tanh/relu, x for leaky_relu/elu
        v = ref.__dict__[name](x, **kwargs) if name in ("sigmoid", "tanh", "relu") else x
        bw = name + "_backward"
        g = getattr(nb, bw)(v, dy, **kwargs)
        if bw in BIT_EXACT_BACKWARD:
            np.testing.assert_array_equal(g, getattr(ref, bw)(v, dy, **kwargs))
        else:
            assert_rel(g, getattr(ref, bw)(v, dy, **kwargs), dtype, factor=2)
        out = np.empty_like(x)
        assert getattr(nb, name)(x, out=out, **kwargs) is out
        np.testing.assert_array_equal(out, y)
        out = np.empty_like(x)
        assert getattr(nb, bw)(v, dy, out=out, **kwargs) is out
        np.testing.assert_array_equal(out, g)
    # any ndim: the kernels see flat views
    x3 = x.reshape(1, *shape)
    np.testing.assert_array_equal(getattr(nb, name)(x3, **kw), getattr(nb, name)(x, **kw).reshape(x3.shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_tanh_expm1_accuracy_over_the_whole_range(dtype):
    # elu_backward(x <= 0, dy=1, alpha=1) is exp(x); elu(x <= 0) is expm1(x).
    lo = -110.0 if dtype == np.float32 else -750.0
    neg = np.concatenate([np.linspace(lo, 0, 400_001), -np.logspace(-30, 1, 2001)]).astype(dtype)
    truth = np.exp(neg.astype(np.float64))
    got = nb.elu_backward(neg, np.ones_like(neg))
    normal = truth >= np.finfo(dtype).tiny
    rel = np.abs(got[normal] - truth[normal]) / truth[normal]
    assert rel.max() <= 1.5 * np.finfo(dtype).eps
    # gradual underflow: within one subnormal step or so of the true value
    sub_step = np.finfo(dtype).smallest_subnormal
    assert np.max(np.abs(got[~normal].astype(np.float64) - truth[~normal])) <= 3 * sub_step

    truth = np.expm1(neg.astype(np.float64))
    got = nb.elu(neg)
    nz = truth != 0
    assert (np.abs(got[nz] - truth[nz]) / np.abs(truth[nz])).max() <= 3 * np.finfo(dtype).eps

    x = np.concatenate([np.linspace(-25, 25, 400_001), np.logspace(-30, 0, 2001),
                        -np.logspace(-30, 0, 2001)]).astype(dtype)
    truth = np.tanh(x.astype(np.float64))
    got = nb.tanh(x)
    nz = truth != 0
    assert (np.abs(got[nz] - truth[nz]) / np.abs(truth[nz])).max() <= 4 * np.finfo(dtype).eps
    assert np.all(np.abs(got) <= 1)

    truth = 1 / (1 + np.exp(-x.astype(np.float64)))
    got = nb.sigmoid(x)
    assert (np.abs(got - truth) / truth).max() <= 3 * np.finfo(dtype).eps


@numba.njit(error_model="numpy")
def _vlog_each(x, out):
    for i in range(x.size):
        out[i] = vmath.vlog(x[i])


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_accuracy_over_the_whole_range(dtype):
    # _vlog (the short-row cross-entropy's log-sum-exp) against float64 /
    # long-double logs: subnormals to the largest float, and IEEE specials.
    fi = np.finfo(dtype)
    x = np.concatenate([np.geomspace(float(fi.smallest_subnormal), float(fi.max), 200_001, dtype=np.longdouble),
                        np.linspace(0.5, 2.0, 100_001)]).astype(dtype)
    got = np.empty_like(x)
    _vlog_each(x, got)
    truth = np.log(x.astype(np.longdouble))
    nz = truth != 0
    ulps = np.abs(got[nz] - truth[nz]) / np.spacing(np.abs(truth[nz]).astype(dtype))
    assert ulps.max() <= 3
    assert np.all(got[~nz] == 0)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, -1.0, np.nan], dtype)
    got = np.empty_like(specials)
    _vlog_each(specials, got)
    np.testing.assert_array_equal(got, [-np.inf, -np.inf, np.inf, np.nan, np.nan, np.nan])


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values_follow_ieee(dtype):
    with np.errstate(all="ignore"):
        x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30,
                      np.finfo(dtype).max, -np.finfo(dtype).max, np.finfo(dtype).smallest_subnormal], dtype)
        for name in ("sigmoid", "tanh", "relu", "leaky_relu", "elu"):
            np.testing.assert_array_equal(getattr(nb, name)(x), getattr(ref, name)(x), err_msg=name)
        for name in ("sigmoid_backward", "tanh_backward", "relu_backward"):
            v = np.nan_to_num(x, nan=0.5, posinf=2.0, neginf=-2.0)
            np.testing.assert_array_equal(getattr(nb, name)(v, x), getattr(ref, name)(v, x), err_msg=name)
        for name in ("leaky_relu_backward", "elu_backward"):
            np.testing.assert_array_equal(getattr(nb, name)(x, np.ones_like(x)),
                                          getattr(ref, name)(x, np.ones_like(x)), err_msg=name)


# ---------------------------------------------------------------- NaN and Inf

def _nan_rows(shape, dtype, key):
    x = data(shape, dtype, key)
    n, c = shape
    x[n // 2, c // 2] = np.nan      # one poisoned element
    if n > 2:
        x[0, :] = np.nan            # a whole NaN row
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 4), (300, 257)])  # serial and parallel paths
def test_nan_propagates_by_row(shape, dtype):
    x = _nan_rows(shape, dtype, "nan")
    bad = np.isnan(x).any(axis=1)
    with np.errstate(all="ignore"):
        for name in ("softmax", "log_softmax"):
            got = getattr(nb, name)(x)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(getattr(ref, name)(x)))
            assert np.isnan(got[bad]).all() and not np.isnan(got[~bad]).any()
        lab = labels(shape, "nan")
        t = probs(shape, dtype, "nan")
        for target in (lab, t):
            for red in ("mean", "sum"):
                assert math.isnan(nb.cross_entropy(x, target, red))
                loss, grad = nb.softmax_cross_entropy(x, target, red, 0.1)
                assert math.isnan(loss)
                assert np.isnan(grad[bad]).all() and not np.isnan(grad[~bad]).any()
            rows = nb.cross_entropy(x, target, "none")
            np.testing.assert_array_equal(np.isnan(rows), bad)
            np.testing.assert_array_equal(np.isnan(rows), np.isnan(ref.cross_entropy(x, target, "none")))
        for name in ("sigmoid", "tanh", "relu", "leaky_relu", "elu"):
            np.testing.assert_array_equal(np.isnan(getattr(nb, name)(x)), np.isnan(x), err_msg=name)
        y = np.abs(data(shape, dtype, "y")) % 1
        for name in ("mean_squared_error", "binary_cross_entropy_with_logits"):
            assert math.isnan(getattr(nb, name)(x, y))
            np.testing.assert_array_equal(np.isnan(getattr(nb, name)(x, y, "none")), np.isnan(x))
        p = np.where(np.isnan(x), np.nan, y).astype(dtype)
        assert math.isnan(nb.binary_cross_entropy(p, y))
        assert math.isnan(nb.sum_squared_error(x, y))


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_logits_match_reference(dtype):
    x = np.array([[np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf], [2.0, np.inf, np.inf]], dtype)
    lab = np.array([1, 1, 0, 0])
    with np.errstate(all="ignore"):
        for name in ("softmax", "log_softmax"):
            np.testing.assert_allclose(getattr(nb, name)(x), getattr(ref, name)(x), rtol=2 * RTOL[dtype])
        for ls in (0.0, 0.1):
            got, want = nb.cross_entropy(x, lab, "none", ls), ref.cross_entropy(x, lab, "none", ls)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
            g, w = nb.softmax_cross_entropy(x, lab, "sum", ls)[1], ref.softmax_cross_entropy(x, lab, "sum", ls)[1]
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
            fin = np.isfinite(w)
            np.testing.assert_allclose(g[fin], w[fin], rtol=RTOL[dtype], atol=RTOL[dtype])


# ---------------------------------------------------------------------- losses

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target_kind", ["labels", "probs"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_softmax_cross_entropy(target_kind, label_smoothing, shape, dtype):
    x = data(shape, dtype, "ce")
    target = labels(shape, "ce") if target_kind == "labels" else probs(shape, dtype, "ce")
    for reduction in ("mean", "sum", "none"):
        loss, grad = nb.softmax_cross_entropy(x, target, reduction, label_smoothing)
        want_loss, want_grad = ref.softmax_cross_entropy(x, target, reduction, label_smoothing)
        assert_loss(loss, want_loss, dtype)
        assert grad.dtype == x.dtype and grad.shape == x.shape
        assert_scaled(grad, want_grad, dtype, factor=2)
        assert_loss(nb.cross_entropy(x, target, reduction, label_smoothing),
                    ref.cross_entropy(x, target, reduction, label_smoothing), dtype)
        out = np.full_like(x, np.nan)
        loss2, grad2 = nb.softmax_cross_entropy(x, target, reduction, label_smoothing, out=out)
        assert grad2 is out
        np.testing.assert_array_equal(out, grad)
        np.testing.assert_array_equal(loss2, loss)
        with pytest.raises(ValueError, match="share memory"):  # the checked backend, as _core: dlogits never overwrite the logits
            backends.load("numba").softmax_cross_entropy(x, target, reduction, label_smoothing, out=x)
    # defaults are mean, no smoothing
    assert nb.cross_entropy(x, target) == nb.cross_entropy(x, target, "mean", 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_more_accurate_than_float32_reference(dtype):
    # Sums run in float64: against a float64 evaluation of the same inputs the
    # numba result is within 1e-6 even where the float32 reference is not.
    shape = (257, 1000)
    x = data(shape, dtype, "acc")
    lab = labels(shape, "acc")
    truth = ref.cross_entropy(x.astype(np.float64), lab, "sum", 0.1)
    assert nb.cross_entropy(x, lab, "sum", 0.1) == pytest.approx(truth, rel=RTOL[dtype])
    truth = ref.softmax_cross_entropy(x.astype(np.float64), lab, "mean")[1]
    np.testing.assert_allclose(nb.softmax_cross_entropy(x, lab)[1], truth,
                               rtol=RTOL[dtype], atol=4 * np.finfo(dtype).eps / shape[0])


@pytest.mark.parametrize("shape", [(7, 3), (33, 10), (60000, 10), (257, 1000)])  # narrow / wide, serial / parallel
def test_labels_out_of_range_raise_index_error(shape):
    # The kernels index by label unchecked: the backend's entry points check
    # the labels first (backends.checks), and name the bad label.
    nb = backends.load("numba")
    x = data(shape, np.float32, "bad")
    probabilities = nb.softmax(x)
    for bad in (shape[1], -1):
        lab = labels(shape, "bad")
        lab[shape[0] // 2] = bad
        for call in (lambda: nb.cross_entropy(x, lab), lambda: nb.softmax_cross_entropy(x, lab),
                     lambda: nb.softmax_cross_entropy(x, lab, "none", 0.1),
                     lambda: nb.cross_entropy_error(probabilities, lab),
                     lambda: nb.cross_entropy_error_backward(probabilities, lab)):
            with pytest.raises(IndexError, match=f"label {bad} at position {shape[0] // 2} is out of range"):
                call()


def _call_or_error(call):
    try:
        return call()
    except (TypeError, ValueError, IndexError) as exc:
        return type(exc)


def test_softmax_cross_entropy_refuses_what_f_would_convert():
    # The backend's entry point refuses anything but C-contiguous
    # float32/float64 logits with int64 labels or same-dtype probabilities,
    # never computing on it as is (F converts such arguments first).
    nb = backends.load("numba")
    x = data((6, 4), np.float32, "plain")
    lab = labels((6, 4), "plain")
    assert _call_or_error(lambda: nb.softmax_cross_entropy(x, lab))[1].shape == (6, 4)
    refused = [
        (x.tolist(), lab), (x.astype(np.float16), lab), (np.asfortranarray(np.tile(x, 2)), lab),
        (x[:, ::2], lab[:6]), (x[0], lab[:1]), (x, lab.astype(np.int32)), (x, lab.tolist()),
        (x, lab[:5]), (x, lab[::2]), (x, np.eye(4, dtype=np.float64)[lab]), (x, np.eye(4, dtype=np.float32)[lab][:5]),
    ]
    for logits, target in refused:
        assert _call_or_error(lambda: nb.softmax_cross_entropy(logits, target)) in (TypeError, ValueError)
    for kwargs in (dict(reduction="avg"), dict(label_smoothing=1.5), dict(label_smoothing=float("nan")),
                   dict(out=np.empty((6, 4))), dict(out=np.empty((4, 6), np.float32)),
                   dict(out=np.empty((6, 8), np.float32)[:, :4]), dict(out=[[0.0] * 4] * 6)):
        assert _call_or_error(lambda: nb.softmax_cross_entropy(x, lab, **kwargs)) in (TypeError, ValueError), kwargs
    readonly = x.copy()
    readonly.flags.writeable = False
    np.testing.assert_array_equal(nb.softmax_cross_entropy(readonly, lab)[1], nb.softmax_cross_entropy(x, lab)[1])


def test_empty_batch_reductions():
    x = np.empty((0, 4))
    lab = np.empty(0, np.int64)
    assert math.isnan(nb.cross_entropy(x, lab))
    assert nb.cross_entropy(x, lab, "sum") == 0.0
    assert nb.cross_entropy(x, lab, "none").shape == (0,)
    # Like _core's, the backend's entry point refuses an empty batch.
    with pytest.raises(ValueError, match="no rows"):
        backends.load("numba").softmax_cross_entropy(x, lab)
    assert nb.softmax(x).shape == (0, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_elementwise_losses(shape, dtype):
    y = data(shape, dtype, "y")
    t = data(shape, dtype, "t")
    p = ref.sigmoid(y)
    q = (_rng(shape, dtype, "q").random(shape)).astype(dtype)
    assert_loss(nb.sum_squared_error(y, t), ref.sum_squared_error(y, t), dtype)
    np.testing.assert_array_equal(nb.sum_squared_error_backward(y, t), ref.sum_squared_error_backward(y, t))
    for reduction in ("mean", "sum", "none"):
        assert_loss(nb.mean_squared_error(y, t, reduction), ref.mean_squared_error(y, t, reduction), dtype)
        np.testing.assert_array_equal(nb.mean_squared_error_backward(y, t, reduction),
                                      ref.mean_squared_error_backward(y, t, reduction))
        assert_loss(nb.binary_cross_entropy(p, q, reduction), ref.binary_cross_entropy(p, q, reduction), dtype)
        np.testing.assert_array_equal(nb.binary_cross_entropy_backward(p, q, reduction),
                                      ref.binary_cross_entropy_backward(p, q, reduction))
        assert_loss(nb.binary_cross_entropy_with_logits(y, q, reduction),
                    ref.binary_cross_entropy_with_logits(y, q, reduction), dtype)
        assert_scaled(nb.binary_cross_entropy_with_logits_backward(y, q, reduction),
                      ref.binary_cross_entropy_with_logits_backward(y, q, reduction), dtype, factor=2)
    # defaults
    assert nb.mean_squared_error(y, t) == nb.mean_squared_error(y, t, "mean")
    # textbook CE on probabilities, labels and one-hot/probability targets
    pr = probs(shape, dtype, "cee")
    for target in (labels(shape, "cee"), probs(shape, dtype, "cee-t")):
        assert_loss(nb.cross_entropy_error(pr, target), ref.cross_entropy_error(pr, target), dtype)
        np.testing.assert_array_equal(nb.cross_entropy_error_backward(pr, target),
                                      ref.cross_entropy_error_backward(pr, target))


def test_binary_cross_entropy_clamps_logs():
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
    t = np.array([0.0, 1.0, 1.0, 0.0, 0.5])
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(nb.binary_cross_entropy(p, t, "none"), ref.binary_cross_entropy(p, t, "none"))
        np.testing.assert_array_equal(nb.binary_cross_entropy_backward(p, t), ref.binary_cross_entropy_backward(p, t))
    z = np.array([-800.0, -30.0, 0.0, 30.0, 800.0])
    np.testing.assert_allclose(nb.binary_cross_entropy_with_logits(z, t, "none"),
                               ref.binary_cross_entropy_with_logits(z, t, "none"), rtol=1e-12)


# ---------------------------------------------------------------------- linear

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matmul(shape, dtype):
    n, k = shape
    a = data((n, k), dtype, "a")
    b = data((k, 5), dtype, "b")
    for ta, tb in ((False, False), (True, False), (False, True), (True, True)):
        aa = np.ascontiguousarray(a.T) if ta else a
        bb = np.ascontiguousarray(b.T) if tb else b
        want = ref.matmul(aa, bb, ta, tb)
        np.testing.assert_array_equal(nb.matmul(aa, bb, ta, tb), want)
        out = np.empty_like(want)
        assert nb.matmul(aa, bb, ta, tb, out=out) is out
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_and_backward(activation, shape, dtype):
    n, fin = shape
    fout = 600 if n == 257 else 6  # a wide layer: the parallel epilogue and bias-gradient pass
    x = data((n, fin), dtype, "x", scale=1.0)
    W = data((fin, fout), dtype, "W", scale=0.5)
    b = data((fout,), dtype, "b")
    for bias in (b, None):
        y = nb.linear(x, W, bias, activation)
        want = ref.linear(x, W, bias, activation)
        if activation in ("none", "relu"):
            np.testing.assert_array_equal(y, want)
        else:
            assert_rel(y, want, dtype, factor=2)
        out = np.empty_like(want)
        assert nb.linear(x, W, bias, activation, out=out) is out
        np.testing.assert_array_equal(out, y)
    y = ref.linear(x, W, b, activation)
    dy = data(y.shape, dtype, "dy", scale=1.0)
    for need_dx in (True, False):
        dx, dW, db = nb.linear_backward(x, W, dy, y, activation, need_dx)
        rdx, rdW, rdb = ref.linear_backward(x, W, dy, y, activation, need_dx)
        # dz is computed bit-exactly, then the same BLAS products
        np.testing.assert_array_equal(dW, rdW)
        if need_dx:
            np.testing.assert_array_equal(dx, rdx)
        else:
            assert dx is None
        # db sums in float64; the float32 reference sums rows in float32
        assert db.dtype == dtype and db.shape == (fout,)
        truth = ref._activation_grad_from_output(y, dy, activation).astype(np.float64).sum(axis=0)
        np.testing.assert_allclose(db, truth, rtol=RTOL[dtype], atol=RTOL[dtype])
        assert_scaled(db, rdb, dtype, factor=20 if dtype == np.float32 else 1)
    outs = dict(dx_out=np.empty_like(x), dW_out=np.empty_like(W), db_out=np.empty_like(b))
    dx, dW, db = nb.linear_backward(x, W, dy, y, activation, True, **outs)
    assert dx is outs["dx_out"] and dW is outs["dW_out"] and db is outs["db_out"]
    want = nb.linear_backward(x, W, dy, y, activation)
    for got, exp in zip((dx, dW, db), want):
        np.testing.assert_array_equal(got, exp)


# ----------------------------------------------------------------- gather_rows

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(70000, 3)])
def test_gather_rows(shape, dtype):
    x = data(shape, dtype, "g")
    idx = _rng(shape, "idx").integers(0, shape[0], 50000 if shape[0] > 1000 else 50)  # 150k: parallel
    np.testing.assert_array_equal(nb.gather_rows(x, idx), ref.gather_rows(x, idx))
    out = np.empty((idx.size, shape[1]), dtype)
    assert nb.gather_rows(x, idx, out=out) is out
    np.testing.assert_array_equal(out, x[idx])
    x3 = x.reshape(shape[0], 1, shape[1])
    np.testing.assert_array_equal(nb.gather_rows(x3, idx), x3[idx])
    # Indices out of range (negative ones too, as in _core) are refused by the entry point.
    big = np.zeros(140000, np.int64)  # large enough for the parallel path
    big[-1] = shape[0]
    for bad in (np.array([0, shape[0]]), np.array([-1]), big):
        with pytest.raises(IndexError):
            backends.load("numba").gather_rows(x, bad)


# ------------------------------------------------------------- optimizer steps

OPTIMIZERS = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01, maximize=True)),
    ("adagrad", dict()),
    ("adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, eps=1e-6, maximize=True)),
    ("rmsprop", dict()),
    ("rmsprop", dict(centered=True, weight_decay=0.01)),
    ("rmsprop", dict(momentum=0.9, alpha=0.9)),
    ("rmsprop", dict(momentum=0.9, centered=True, maximize=True, eps=1e-6)),
    ("adam", dict()),
    ("adam", dict(lr=0.01, weight_decay=0.1)),
    ("adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, beta1=0.8, beta2=0.99)),
    ("adam", dict(maximize=True, eps=1e-6)),
]


def _run_optimizer(backend, name, kwargs, param, grads):
    state = [np.zeros_like(param) for _ in range(3)]
    for step, grad in enumerate(grads, start=1):
        if name == "sgd":
            backend.sgd_step(param, grad, state[0], first_step=step == 1, **kwargs)
        elif name == "adagrad":
            backend.adagrad_step(param, grad, state[0], step, **kwargs)
        elif name == "rmsprop":
            backend.rmsprop_step(param, grad, state[0], state[1], state[2], **kwargs)
        else:
            backend.adam_step(param, grad, state[0], state[1], step, **kwargs)
    return param, state


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", range(len(OPTIMIZERS)))
def test_optimizer_steps_match_reference_bitwise(case, shape, dtype):
    name, kwargs = OPTIMIZERS[case]
    param = data(shape, dtype, "param", scale=1.0)
    grads = [data(shape, dtype, "grad", k, scale=1.0) for k in range(5)]
    p1, s1 = _run_optimizer(nb, name, kwargs, param.copy(), grads)
    p2, s2 = _run_optimizer(ref, name, kwargs, param.copy(), grads)
    assert p1.dtype == dtype
    exact = not (name == "adam" and dtype == np.float32 and np.lib.NumpyVersion(np.__version__) < "2.0.0")
    for got, want in zip([p1, *s1], [p2, *s2]):
        if exact:  # the same dtype arithmetic in the same order
            np.testing.assert_array_equal(got, want)
        else:  # NumPy 1 keeps adam's float32 denominator in float32
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_optimizer_refuses_non_contiguous_state():
    p = np.ones((4, 6))[:, ::2]
    with pytest.raises(ValueError):
        nb.adam_step(p, np.ones((4, 3)), np.zeros((4, 3)), np.zeros((4, 3)), 1)


def test_sgd_without_momentum_accepts_no_buffer():
    p = np.ones(5)
    nb.sgd_step(p, np.ones(5), None, 0.5)
    np.testing.assert_array_equal(p, 0.5)
    p = np.ones(5, np.float32)
    nb.rmsprop_step(p, np.ones(5, np.float32), np.zeros(5, np.float32), None, None)
    assert np.all(p < 1)


# ------------------------------------------------------- serial vs parallel



def _everything(shape, dtype):
    """Results of every threaded function on one input, as a flat list."""
    x = data(shape, dtype, "all")
    y = nb.tanh(x)
    dy = data(shape, dtype, "all-dy", scale=1.0)
    lab = labels(shape, "all")
    t = probs(shape, dtype, "all")
    W = data((shape[1], shape[1]), dtype, "all-W", scale=0.1)
    res = [nb.softmax(x), nb.log_softmax(x)]
    for name in FORWARD:
        res.append(getattr(nb, name)(x))
        res.append(getattr(nb, name + "_backward")(y, dy))
    for target in (lab, t):
        for red in ("mean", "none"):
            loss, grad = nb.softmax_cross_entropy(x, target, red, 0.1)
            res += [np.asarray(loss), grad, np.asarray(nb.cross_entropy(x, target, red))]
    for act in ACTIVATIONS:
        out = nb.linear(x, W, W[0], act)
        res.append(out)
        res += [r for r in nb.linear_backward(x, W, dy, out, act)]
    res.append(nb.gather_rows(x, lab))
    for name, kwargs in OPTIMIZERS:
        param, state = _run_optimizer(nb, name, kwargs, x.copy(), [dy, y])
        res += [param, *state]
    return res


@pytest.mark.skipif(numba.get_num_threads() < 2, reason="one numba thread: no parallel path")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3), (129, 131)])
def test_parallel_path_is_bit_identical_to_serial(shape, dtype, monkeypatch):
    for kind in _parallel.PAR_MIN:
        monkeypatch.setitem(_parallel.PAR_MIN, kind, 1 << 62)
    serial = _everything(shape, dtype)
    for kind in _parallel.PAR_MIN:
        monkeypatch.setitem(_parallel.PAR_MIN, kind, 0)
    parallel = _everything(shape, dtype)
    assert len(serial) == len(parallel)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nchunks", [1, 3, 64])
def test_parallel_drivers_cover_every_element(nchunks, dtype):
    # Call the drivers directly (also when numba has one thread), with more
    # chunks than rows and sizes that are not multiples of the alignment.
    x = data((37, 101), dtype, "drv")
    flat = x.ravel()
    out = np.full_like(x, np.nan)
    activations._softmax.driver((x, out, False), 37, nchunks)
    np.testing.assert_array_equal(out, nb.softmax(x))
    for name, code in activations.ACTIVATION_CODES.items():
        if name == "none":
            continue
        o = np.full_like(flat, np.nan)
        activations._act_fwd.driver((flat, o, code, 0.3), flat.size, nchunks)
        s = np.empty_like(flat)
        activations._act_fwd_k(flat, s, code, 0.3)
        np.testing.assert_array_equal(o, s, err_msg=name)
        activations._act_bwd.driver((flat, flat, o, code, 0.3), flat.size, nchunks)
        activations._act_bwd_k(flat, flat, s, code, 0.3)
        np.testing.assert_array_equal(o, s, err_msg=name)
    for logits in (x, x[:, :10].copy()):  # wide rows, and short ones (_ce_narrow_rows)
        lab = labels(logits.shape, "drv")
        rows_p, rows_s = np.empty(37), np.empty(37)
        gp, gs = np.empty_like(logits), np.empty_like(logits)
        losses._ce.driver((logits, lab, _common.empty(dtype, 2), gp, rows_p, True, 0.1, 0.5, True), 37, nchunks)
        losses._ce_row_losses(logits, lab, _common.empty(dtype, 2), gs, rows_s, True, 0.1, 0.5, True)
        np.testing.assert_array_equal(gp, gs)
        np.testing.assert_array_equal(rows_p, rows_s)
    db_p, db_s = np.empty(101), np.empty(101)
    dz_p, dz_s = np.empty_like(x), np.empty_like(x)
    tanh = activations.ACTIVATION_CODES["tanh"]
    linear_ops._act_grad_bias.driver((x, x, dz_p, db_p, tanh), 101, nchunks)
    linear_ops._act_grad_bias_cols(x, x, dz_s, db_s, tanh, 0, 101)
    np.testing.assert_array_equal(dz_p, dz_s)
    np.testing.assert_array_equal(db_p, db_s)
    g = np.empty((40, 101), dtype)
    idx = np.arange(40) % 37
    linear_ops._gather.driver((idx, g, x), 40, nchunks)
    np.testing.assert_array_equal(g, x[idx])


# ---------------------------------------------------------------- numba cache

_CACHE_PROBE = textwrap.dedent("""
    import json, os, sys
    if sys.argv[1] == "numba-first":
        import numba  # imported before the backend: it has read its config already
    import numpy as np
    import numba_backend as nb
    act = nb.activations
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    ok = bool(np.array_equal(nb.relu(x), np.maximum(x, 0)))
    ok = ok and bool(abs(nb.softmax(x).sum() - 3) < 1e-12)
    out = np.empty(12)
    act._act_fwd.driver((x.ravel(), out, act.ACTIVATION_CODES["relu"], 0.0), 12, 2)  # a parallel driver
    ok = ok and bool(np.array_equal(out, np.maximum(x, 0).ravel()))
    import numba
    kernels = (act._act_fwd_k, act._softmax_rows, act._act_fwd.driver)
    print(json.dumps({
        "ok": ok,
        "env": os.environ.get("NUMBA_CACHE_DIR"),
        "config": numba.core.config.CACHE_DIR,
        "cache_path": act._act_fwd_k._cache._cache_path,
        "hits": [sum(k.stats.cache_hits.values()) for k in kernels],
        "misses": [sum(k.stats.cache_misses.values()) for k in kernels],
        "fastnn_imported": any(m.startswith("fastnn") for m in sys.modules),
    }))
""")


@pytest.fixture
def readonly_install(tmp_path):
    """A copy of the numba_backend package in a directory the process cannot
    write to. chmod alone does not stop root, so the package's `__pycache__`
    is also taken by a plain file: neither Python nor numba can create the
    cache directory there."""
    site = tmp_path / "site"
    package = site / "numba_backend"
    shutil.copytree(os.path.dirname(nb.__file__), package, ignore=shutil.ignore_patterns("__pycache__"))
    (site / "probe.py").write_text(_CACHE_PROBE)
    (package / "__pycache__").write_text("")
    for path in [*package.iterdir(), site / "probe.py"]:
        path.chmod(0o444)
    package.chmod(0o555)
    site.chmod(0o555)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "FASTNN_DATA", "XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONPATH=str(site), TMPDIR=str(tmp_path))
    yield site, home, env
    site.chmod(0o755)
    package.chmod(0o755)


def _probe(site, env, mode="plain"):
    proc = subprocess.run([sys.executable, str(site / "probe.py"), mode], env=env, cwd=str(site.parent),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_readonly_install_caches_in_user_dir_and_reuses_it(readonly_install):
    site, home, env = readonly_install
    expected = home / ".cache" / "fastnn" / "numba-cache"
    installed = sorted(p.name for p in (site / "numba_backend").iterdir())
    first = _probe(site, env)
    assert first["ok"] and not first["fastnn_imported"]
    assert first["env"] == first["config"] == str(expected)
    assert first["cache_path"].startswith(str(expected))
    assert min(first["misses"]) >= 1 and max(first["hits"]) == 0
    assert list(expected.rglob("*.nbi")) and list(expected.rglob("*.nbc"))
    assert sorted(p.name for p in site.iterdir()) == ["numba_backend", "probe.py"]
    assert sorted(p.name for p in (site / "numba_backend").iterdir()) == installed
    second = _probe(site, env)  # a new process loads the kernels and the driver instead of compiling
    assert second["ok"] and max(second["misses"]) == 0 and min(second["hits"]) >= 1


def test_readonly_install_cache_dir_choices(readonly_install, tmp_path):
    site, home, env = readonly_install
    # FASTNN_DATA first, also when numba was imported before the backend
    data_dir = tmp_path / "data"
    got = _probe(site, dict(env, FASTNN_DATA=str(data_dir)), "numba-first")
    assert got["ok"] and got["env"] == got["config"] == str(data_dir / "numba-cache")
    assert list((data_dir / "numba-cache").rglob("*.nbi"))
    # an explicit NUMBA_CACHE_DIR is left alone
    mine = tmp_path / "mine"
    got = _probe(site, dict(env, NUMBA_CACHE_DIR=str(mine)))
    assert got["ok"] and got["env"] == got["config"] == str(mine)
    # unwritable home: a per-user directory under the temp dir
    (home / ".cache").write_text("")
    got = _probe(site, env)
    assert got["ok"] and os.path.dirname(got["env"]) == str(tmp_path)
    assert os.path.basename(got["env"]).startswith("fastnn-numba-cache-")


def test_no_writable_cache_dir_disables_the_disk_cache(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(_common, "_writable_dir", lambda path: False)
    before = os.environ.get("NUMBA_CACHE_DIR")
    assert _common._choose_cache_dir() == (False, None)
    assert os.environ.get("NUMBA_CACHE_DIR") == before
