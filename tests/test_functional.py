"""fastnn.functional on every backend.

Expected values come from the NumPy reference backend called directly
(`backends.load("numpy")`) on the same inputs up-cast to float64, so a float32
kernel is checked against the float64 answer for its own inputs. For the numpy
backend that comparison checks the functional layer (conversion, dtype, out=,
views); the reference itself is validated independently here by the textbook's
worked numbers and closed-form values, by finite differences in
test_gradients.py and by torch in test_torch_parity.py.
"""
import warnings

import numpy as np
import pytest

import fastnn.functional as F
from fastnn import backends

REF = backends.load("numpy")

SHAPES = [(1, 1), (7, 3), (33, 10), (257, 1000)]
DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
ACTIVATIONS = ["none", "relu", "sigmoid", "tanh"]
# out-features of linear / N of matmul, per entry of SHAPES
OUT_FEATURES = {(1, 1): 1, (7, 3): 5, (33, 10): 17, (257, 1000): 129}
# Row-wise kernels process short rows in blocks of rows: 600x10 spans three
# blocks, 40x63 is the longest short row, 40x64 the shortest long one. With
# AVX-512, rows of at most 16 floats / 8 doubles go 16 / 8 rows at a time,
# transposed: 45x16, 20x8 and 20x9 sit at that edge, with partial groups.
ROW_SHAPES = SHAPES + [(600, 10), (40, 63), (40, 64), (45, 16), (20, 8), (20, 9), (21, 17)]


def shape_id(shape):
    return "x".join(map(str, shape))


# ---------------------------------------------------------------- helpers

def tolerances(dtype, n=1):
    """(rtol, atol) for a value built from n terms: float32 sums get sqrt(n) more room."""
    root = max(1.0, float(np.sqrt(n)))
    if np.dtype(dtype) == np.float64:
        return 1e-10, 1e-12 * root
    return max(1e-5, 3e-7 * root), 1e-6 * root


def assert_array(actual, expected, dtype, n=1):
    assert isinstance(actual, np.ndarray), f"expected an ndarray, got {type(actual).__name__}"
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    assert actual.shape == np.shape(expected), f"shape {actual.shape}, expected {np.shape(expected)}"
    rtol, atol = tolerances(dtype, n)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def assert_scalar(actual, expected, dtype, n=1):
    assert np.ndim(actual) == 0 and isinstance(actual, (float, np.floating)), \
        f"expected a float, got {type(actual).__name__} {actual!r}"
    rtol, atol = tolerances(dtype, n)
    np.testing.assert_allclose(float(actual), expected, rtol=rtol, atol=atol)


def assert_loss(actual, expected, reduction, dtype, n):
    if reduction == "none":
        assert_array(actual, expected, dtype)
    else:
        assert_scalar(actual, expected, dtype, n)


def assert_bounded(actual, expected, bound, dtype):
    """|actual - expected| <= rtol * bound elementwise, bound = what the values
    are summed from (|A| @ |B| for a product): the error bound of a dot product."""
    assert isinstance(actual, np.ndarray) and actual.dtype == np.dtype(dtype), \
        f"got {type(actual).__name__} {getattr(actual, 'dtype', None)}, expected {np.dtype(dtype)}"
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    rtol = 1e-12 if np.dtype(dtype) == np.float64 else 1e-5
    err = np.abs(actual.astype(np.float64) - expected)
    limit = rtol * (bound + np.abs(expected)) + (1e-300 if rtol < 1e-6 else 1e-7)
    worst = np.unravel_index(np.argmax(err - limit), err.shape) if err.size else None
    assert np.all(err <= limit), (f"max error {err.max():.3g} exceeds the bound at {worst}: "
                                  f"got {actual[worst]!r}, expected {expected[worst]!r}")


def up(a):
    """Float arrays as float64 (the reference's input); anything else unchanged."""
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a


def normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def probabilities(rng, shape, dtype):
    z = rng.standard_normal(shape) * 2
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(dtype)


def labels(rng, n, classes):
    return rng.integers(0, classes, size=n).astype(np.int64)


def unit(rng, shape, dtype, lo=0.02, hi=0.98):
    return rng.uniform(lo, hi, size=shape).astype(dtype)


# ------------------------------------------------------------ softmax family

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES + [(1,), (10,), (1000,)], ids=shape_id)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_matches_reference(backend, rng, name, shape, dtype):
    x = normal(rng, shape, dtype, scale=3.0)
    x0 = x.copy()
    got = getattr(F, name)(x)
    expected = getattr(REF, name)(up(x).reshape(-1, shape[-1])).reshape(shape)
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == shape
    # Relative to each value: exp's rounding of x - max (|x - max| up to ~25
    # here) and the row sum's (sqrt(n) eps) scale every probability alike; a
    # log-probability's error is that much of 1 + |log p|.
    eps, n = float(np.finfo(dtype).eps), shape[-1]
    rtol = 2 * eps * (np.sqrt(n) + 25)
    magnitude = np.abs(expected) + (1.0 if name == "log_softmax" else 0.0)
    err = np.abs(got.astype(np.float64) - expected)
    limit = rtol * magnitude + float(np.finfo(dtype).tiny)
    assert np.all(err <= limit), f"max error {(err / limit).max():.3g} x the bound {rtol:.3g} x |value|"
    np.testing.assert_array_equal(x, x0)  # the input is left alone
    if name == "softmax":
        np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=tolerances(dtype, shape[-1])[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [8, 10, 40])
def test_softmax_tiny_probabilities_underflow_gradually(backend, dtype, cols):
    """Rows holding one 0 and values down to below the smallest subnormal's log:
    each probability within a few ulp of exp(x) / sum, the subnormal ones
    within a few subnormal steps, none flushed to zero early (rows of at most
    one vector take their own exp on AVX-512)."""
    lo = -110.0 if dtype == np.float32 else -750.0
    x = np.linspace(lo, 0.0, 160 * (cols - 1)).reshape(160, cols - 1)
    x = np.concatenate([np.zeros((160, 1)), x], axis=1).astype(dtype)
    truth = np.exp(up(x))
    truth /= truth.sum(axis=1, keepdims=True)
    got = F.softmax(x)
    normal = truth >= np.finfo(dtype).tiny
    # a few ulp per exp, and the rounding of a sum of cols terms
    assert (np.abs(got[normal] - truth[normal]) / truth[normal]).max() <= 4 * np.sqrt(cols) * np.finfo(dtype).eps
    assert np.abs(got[~normal] - truth[~normal]).max() <= 3 * np.finfo(dtype).smallest_subnormal
    loss, grad = F.softmax_cross_entropy(x, np.zeros(160, np.int64))
    np.testing.assert_allclose(grad[:, 1:], truth[:, 1:] / 160, rtol=16 * np.finfo(dtype).eps,
                               atol=3 * float(np.finfo(dtype).smallest_subnormal))


# ---------------------------------------------------------------- activations

from conftest import ACTIVATION_CASES


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(1000,)], ids=shape_id)
@pytest.mark.parametrize("case", list(ACTIVATION_CASES))
def test_activation_matches_reference(backend, rng, case, shape, dtype):
    name = case.split("-")[0]
    params, _ = ACTIVATION_CASES[case]
    x = normal(rng, shape, dtype, scale=2.0)
    x.flat[::7] = 0.0  # the kink of relu / leaky_relu / elu
    got = getattr(F, name)(x, *params)
    assert_array(got, getattr(REF, name)(up(x), *params), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(1000,)], ids=shape_id)
@pytest.mark.parametrize("case", list(ACTIVATION_CASES))
def test_activation_backward_matches_reference(backend, rng, case, shape, dtype):
    name = case.split("-")[0]
    params, saved = ACTIVATION_CASES[case]
    x = normal(rng, shape, dtype, scale=2.0)
    x.flat[::7] = 0.0
    s = getattr(REF, name)(x, *params) if saved == "y" else x  # y = f(x) in the input dtype
    s = np.ascontiguousarray(s, dtype=dtype)
    dy = normal(rng, shape, dtype)
    got = getattr(F, name + "_backward")(s, dy, *params)
    assert_array(got, getattr(REF, name + "_backward")(up(s), up(dy), *params), dtype)


# ------------------------------------------------------------ squared errors

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(10,)], ids=shape_id)
def test_sum_squared_error_matches_reference(backend, rng, shape, dtype):
    y, t = normal(rng, shape, dtype), normal(rng, shape, dtype)
    assert_scalar(F.sum_squared_error(y, t), REF.sum_squared_error(up(y), up(t)), dtype, y.size)
    assert_array(F.sum_squared_error_backward(y, t), REF.sum_squared_error_backward(up(y), up(t)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(10,)], ids=shape_id)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mean_squared_error_matches_reference(backend, rng, reduction, shape, dtype):
    y, t = normal(rng, shape, dtype), normal(rng, shape, dtype)
    assert_loss(F.mean_squared_error(y, t, reduction), REF.mean_squared_error(up(y), up(t), reduction),
                reduction, dtype, y.size)
    assert_array(F.mean_squared_error_backward(y, t, reduction),
                 REF.mean_squared_error_backward(up(y), up(t), reduction), dtype)


def test_mean_squared_error_default_reduction_is_mean(backend, rng):
    y, t = normal(rng, (4, 3), np.float64), normal(rng, (4, 3), np.float64)
    assert F.mean_squared_error(y, t) == pytest.approx(np.mean((y - t) ** 2), rel=1e-12)
    np.testing.assert_allclose(F.mean_squared_error_backward(y, t), 2 * (y - t) / y.size, rtol=1e-12)


# ---------------------------------------------------- textbook cross-entropy

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("target", ["labels", "one_hot"])
def test_cross_entropy_error_matches_reference(backend, rng, target, shape, dtype):
    y = probabilities(rng, shape, dtype)
    lab = labels(rng, shape[0], shape[1])
    t = lab if target == "labels" else np.eye(shape[1], dtype=dtype)[lab]
    assert_scalar(F.cross_entropy_error(y, t), REF.cross_entropy_error(up(y), up(t)), dtype, y.size)
    assert_array(F.cross_entropy_error_backward(y, t), REF.cross_entropy_error_backward(up(y), up(t)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ["label", "one_hot"])
def test_cross_entropy_error_1d_is_a_batch_of_one(backend, rng, target, dtype):
    y = probabilities(rng, (10,), dtype)
    t = np.int64(3) if target == "label" else np.eye(10, dtype=dtype)[3]
    expected = -np.log(float(y[3]) + 1e-7)
    assert_scalar(F.cross_entropy_error(y, t), expected, dtype)
    dy = F.cross_entropy_error_backward(y, t)
    expected_dy = np.zeros(10)
    expected_dy[3] = -1.0 / (float(y[3]) + 1e-7)
    assert_array(dy, expected_dy, dtype)
    if target == "label":  # a plain int and a length-1 label array mean the same
        assert_scalar(F.cross_entropy_error(y, 3), expected, dtype)
        assert_scalar(F.cross_entropy_error(y, np.array([3])), expected, dtype)


# ------------------------------------------------ cross-entropy from logits

def _target(rng, kind, shape, dtype):
    return labels(rng, shape[0], shape[1]) if kind == "labels" else probabilities(rng, shape, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=shape_id)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["labels", "probs"])
def test_cross_entropy_matches_reference(backend, rng, kind, reduction, smoothing, shape, dtype):
    logits = normal(rng, shape, dtype, scale=3.0)
    target = _target(rng, kind, shape, dtype)
    expected = REF.cross_entropy(up(logits), up(target), reduction, smoothing)
    got = F.cross_entropy(logits, target, reduction=reduction, label_smoothing=smoothing)
    assert_loss(got, expected, reduction, dtype, logits.size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=shape_id)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["labels", "probs"])
def test_softmax_cross_entropy_matches_reference(backend, rng, kind, reduction, smoothing, shape, dtype):
    logits = normal(rng, shape, dtype, scale=3.0)
    target = _target(rng, kind, shape, dtype)
    exp_loss, exp_grad = REF.softmax_cross_entropy(up(logits), up(target), reduction, smoothing)
    loss, grad = F.softmax_cross_entropy(logits, target, reduction=reduction, label_smoothing=smoothing)
    assert_loss(loss, exp_loss, reduction, dtype, logits.size)
    assert_array(grad, exp_grad, dtype)
    # the fused loss is the unfused one
    assert_loss(loss, REF.cross_entropy(up(logits), up(target), reduction, smoothing), reduction, dtype, logits.size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["labels", "probs"])
def test_cross_entropy_1d_logits_is_a_batch_of_one(backend, rng, kind, reduction, dtype):
    logits = normal(rng, (6,), dtype, scale=2.0)
    target = np.int64(4) if kind == "labels" else probabilities(rng, (6,), dtype)
    ref_target = np.array([4]) if kind == "labels" else up(target)[None]
    exp_row = REF.cross_entropy(up(logits)[None], ref_target, "none", 0.1)[0]
    got = F.cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1)
    assert np.ndim(got) == 0
    assert_scalar(got, exp_row, dtype)
    loss, grad = F.softmax_cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1)
    assert_scalar(loss, exp_row, dtype)
    assert_array(grad, REF.softmax_cross_entropy(up(logits)[None], ref_target, reduction, 0.1)[1][0], dtype)


# -------------------------------------------------------------- binary CE

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(10,)], ids=shape_id)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_matches_reference(backend, rng, reduction, shape, dtype):
    p = unit(rng, shape, dtype)
    t = (rng.uniform(size=shape) < 0.5).astype(dtype)
    t.flat[::5] = 0.3  # soft targets too
    assert_loss(F.binary_cross_entropy(p, t, reduction), REF.binary_cross_entropy(up(p), up(t), reduction),
                reduction, dtype, p.size)
    assert_array(F.binary_cross_entropy_backward(p, t, reduction),
                 REF.binary_cross_entropy_backward(up(p), up(t), reduction), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(10,)], ids=shape_id)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits_matches_reference(backend, rng, reduction, shape, dtype):
    z = normal(rng, shape, dtype, scale=4.0)
    t = unit(rng, shape, dtype, 0.0, 1.0)
    t.flat[::3] = 1.0
    assert_loss(F.binary_cross_entropy_with_logits(z, t, reduction),
                REF.binary_cross_entropy_with_logits(up(z), up(t), reduction), reduction, dtype, z.size)
    assert_array(F.binary_cross_entropy_with_logits_backward(z, t, reduction),
                 REF.binary_cross_entropy_with_logits_backward(up(z), up(t), reduction), dtype)


# ------------------------------------------------------------------ linear

MATMUL_SHAPES = [(1, 1, 1), (7, 3, 5), (33, 10, 17), (257, 1000, 129), (5, 300, 600), (20, 0, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mkn", MATMUL_SHAPES, ids=shape_id)
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("trans_a", [False, True])
def test_matmul_matches_reference(backend, rng, trans_a, trans_b, mkn, dtype):
    m, k, n = mkn
    a_op, b_op = normal(rng, (m, k), dtype), normal(rng, (k, n), dtype)
    a = np.ascontiguousarray(a_op.T) if trans_a else a_op  # stored transposed when trans_a
    b = np.ascontiguousarray(b_op.T) if trans_b else b_op
    got = F.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    expected = REF.matmul(up(a), up(b), trans_a, trans_b)
    np.testing.assert_allclose(expected, up(a_op) @ up(b_op), rtol=1e-12, atol=1e-12)
    assert_bounded(got, expected, np.abs(up(a_op)) @ np.abs(up(b_op)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_reference(backend, rng, bias, activation, shape, dtype):
    n_out = OUT_FEATURES[shape]
    x, W = normal(rng, shape, dtype), normal(rng, (shape[1], n_out), dtype, scale=0.5)
    b = normal(rng, (n_out,), dtype) if bias else None
    got = F.linear(x, W, b, activation=activation)
    expected = REF.linear(up(x), up(W), up(b), activation)
    bound = np.abs(up(x)) @ np.abs(up(W)) + (np.abs(up(b)) if bias else 0)
    assert_bounded(got, expected, bound, dtype)


def test_linear_activation_default_and_none(backend, rng):
    x, W, b = normal(rng, (4, 3), np.float64), normal(rng, (3, 2), np.float64), normal(rng, (2,), np.float64)
    np.testing.assert_allclose(F.linear(x, W, b), x @ W + b, rtol=1e-12)
    np.testing.assert_allclose(F.linear(x, W, b, activation=None), x @ W + b, rtol=1e-12)
    np.testing.assert_allclose(F.linear(x, W), x @ W, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,need_dx", [(s, True) for s in SHAPES] + [((33, 10), False)],
                         ids=[shape_id(s) for s in SHAPES] + ["33x10-no_dx"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_backward_matches_reference(backend, rng, activation, need_dx, shape, dtype):
    n_out = OUT_FEATURES[shape]
    x, W = normal(rng, shape, dtype), normal(rng, (shape[1], n_out), dtype, scale=0.5)
    b = normal(rng, (n_out,), dtype)
    y = np.ascontiguousarray(REF.linear(x, W, b, activation), dtype=dtype)
    dy = normal(rng, y.shape, dtype)
    x0, W0, dy0, y0 = x.copy(), W.copy(), dy.copy(), y.copy()
    kw = {} if activation == "none" else {"y": y}
    dx, dW, db = F.linear_backward(x, W, dy, activation=activation, need_dx=need_dx, **kw)
    e_dx, e_dW, e_db = REF.linear_backward(up(x), up(W), up(dy), up(y), activation, True)
    dz = np.abs(REF._activation_grad_from_output(up(y), up(dy), activation))
    assert_bounded(dW, e_dW, np.abs(up(x)).T @ dz, dtype)
    assert_bounded(db, e_db, dz.sum(axis=0), dtype)
    if need_dx:
        assert_bounded(dx, e_dx, dz @ np.abs(up(W)).T, dtype)
    else:
        assert dx is None
    for arr, orig in ((x, x0), (W, W0), (dy, dy0), (y, y0)):  # inputs untouched (dz is scratch)
        np.testing.assert_array_equal(arr, orig)


# ------------------------------------------------------------- gather_rows

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int64])
@pytest.mark.parametrize("shape", SHAPES + [(50,), (60, 28, 28)], ids=shape_id)
def test_gather_rows_is_fancy_indexing(backend, rng, shape, dtype):
    x = (rng.uniform(0, 200, size=shape)).astype(dtype)
    index = rng.integers(0, shape[0], size=2 * shape[0] + 3)
    got = F.gather_rows(x, index)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, x[index])
    np.testing.assert_array_equal(F.gather_rows(x, index.astype(np.int32)), x[index])
    np.testing.assert_array_equal(F.gather_rows(x, list(index)), x[index])


@pytest.mark.parametrize("shape", [(7, 3), (50,), (6, 28, 28)], ids=shape_id)
def test_gather_rows_with_an_empty_index(backend, shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    got = F.gather_rows(x, np.zeros(0, dtype=np.int64))
    assert got.shape == (0,) + shape[1:] and got.dtype == x.dtype


# ------------------------------------------------------------------ out=

def _out_cases(rng, dtype):
    """(name, call(out), out array to pass, expected values)."""
    x = normal(rng, (33, 10), dtype, scale=2.0)
    x1 = x[0].copy()
    lab = labels(rng, 33, 10)
    W, b = normal(rng, (10, 7), dtype), normal(rng, (7,), dtype)
    idx = rng.integers(0, 33, size=40)
    cases = []
    for name in ("softmax", "log_softmax", "sigmoid", "tanh", "relu", "leaky_relu", "elu"):
        cases.append((name, lambda o, f=getattr(F, name): f(x, out=o), np.empty_like(x),
                      getattr(REF, name)(up(x))))
    for name in ("softmax", "log_softmax"):
        cases.append((name + "-1d", lambda o, f=getattr(F, name): f(x1, out=o), np.empty_like(x1),
                      getattr(REF, name)(up(x1)[None])[0]))
    cases.append(("leaky_relu-0.3", lambda o: F.leaky_relu(x, 0.3, out=o), np.empty_like(x), REF.leaky_relu(up(x), 0.3)))
    cases.append(("elu-0.5", lambda o: F.elu(x, 0.5, out=o), np.empty_like(x), REF.elu(up(x), 0.5)))
    cases.append(("softmax_cross_entropy", lambda o: F.softmax_cross_entropy(x, lab, out=o)[1], np.empty_like(x),
                  REF.softmax_cross_entropy(up(x), lab)[1]))
    cases.append(("softmax_cross_entropy-1d", lambda o: F.softmax_cross_entropy(x1, 2, out=o)[1],
                  np.empty_like(x1), REF.softmax_cross_entropy(up(x1)[None], np.array([2]))[1][0]))
    cases.append(("matmul", lambda o: F.matmul(x, W, out=o), np.empty((33, 7), dtype), up(x) @ up(W)))
    cases.append(("matmul-tt", lambda o: F.matmul(W, x, trans_a=True, trans_b=True, out=o), np.empty((7, 33), dtype),
                  up(W).T @ up(x).T))
    cases.append(("linear", lambda o: F.linear(x, W, b, activation="tanh", out=o), np.empty((33, 7), dtype),
                  np.tanh(up(x) @ up(W) + up(b))))
    cases.append(("gather_rows", lambda o: F.gather_rows(x, idx, out=o), np.empty((40, 10), dtype), up(x)[idx]))
    return cases


OUT_NAMES = [c[0] for c in _out_cases(np.random.default_rng(0), np.float64)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", OUT_NAMES)
def test_out_is_returned_and_filled(backend, rng, case, dtype):
    name, call, out, expected = next(c for c in _out_cases(rng, dtype) if c[0] == case)
    out.fill(np.nan)
    got = call(out)
    assert_array(out, expected, dtype, n=10)  # the values went into out...
    assert got is out, f"{name}(out=...) returned a different array object than out"  # ...and out came back


@pytest.mark.parametrize("case", OUT_NAMES)
def test_out_of_wrong_dtype_or_shape_is_refused(backend, rng, case):
    name, call, out, _ = next(c for c in _out_cases(rng, np.float64) if c[0] == case)
    with pytest.raises((TypeError, ValueError)):
        call(np.zeros(out.shape, dtype=np.float32))
    with pytest.raises(ValueError):
        call(np.empty((out.shape[0] + 1,) + out.shape[1:], dtype=out.dtype))
    if out.ndim == 2 and out.shape[1] > 1:
        strided = np.empty((out.shape[0], 2 * out.shape[1]), dtype=out.dtype)[:, ::2]
        with pytest.raises(ValueError):
            call(strided)
    readonly = np.empty_like(out)
    readonly.flags.writeable = False
    with pytest.raises(ValueError):
        call(readonly)


# Aliasing, per case the one right answer (the same on every backend):
# out = x itself is computed in place for elementwise and row-wise kernels,
# which read what they overwrite first; any other overlap is a ValueError.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "sigmoid", "tanh", "relu", "leaky_relu", "elu"])
def test_out_aliasing_the_input_is_computed_in_place(backend, rng, name, dtype):
    """f(x, out=x): the in-place result equals f(x), and x is what comes back."""
    x = normal(rng, (33, 10), dtype, scale=2.0)
    expected = getattr(REF, name)(up(x))
    got = getattr(F, name)(x, out=x)
    assert got is x
    assert_array(x, expected, dtype, n=10)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "sigmoid", "tanh", "relu", "leaky_relu", "elu"])
def test_out_partly_overlapping_the_input_is_refused(backend, rng, name):
    """out a window of x's buffer one element further on: no one-pass kernel
    could compute that, so it is a ValueError and x is left as it was."""
    buf = normal(rng, 33 * 10 + 1, np.float64, scale=2.0)
    before = buf.copy()
    x, out = buf[:-1].reshape(33, 10), buf[1:].reshape(33, 10)
    with pytest.raises(ValueError, match="memory"):
        getattr(F, name)(x, out=out)
    np.testing.assert_array_equal(buf, before)


def test_softmax_cross_entropy_out_aliasing_logits_is_refused(backend, rng):
    """The gradient may not overwrite logits (as in _core, which refuses it)."""
    x = normal(rng, (33, 10), np.float64)
    before = x.copy()
    with pytest.raises(ValueError, match="memory"):
        F.softmax_cross_entropy(x, labels(rng, 33, 10), out=x)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("name", ["matmul", "linear"])
def test_out_aliasing_an_operand_is_refused(backend, rng, name):
    """A GEMM reads every operand element many times: out = a or out = b is a ValueError."""
    a = normal(rng, (8, 8), np.float64)
    b = normal(rng, (8, 8), np.float64)
    call = F.matmul if name == "matmul" else F.linear
    for which in ("a", "b"):
        a2, b2 = a.copy(), b.copy()
        with pytest.raises(ValueError, match="memory"):
            call(a2, b2, out=a2 if which == "a" else b2)
        np.testing.assert_array_equal(a2, a)
        np.testing.assert_array_equal(b2, b)


# ------------------------------------------------------- strided input views

def _strided(rng, shape, dtype):
    """A non-contiguous view with the given shape (every other column of a wider array)."""
    wide = normal(rng, (shape[0], 2 * shape[1]), dtype, scale=2.0)
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    return view


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_views_equal_contiguous_copies(backend, rng, dtype):
    tol = tolerances(dtype, 100)
    c = np.ascontiguousarray

    def same(a, b):
        if isinstance(a, tuple):
            for u, v in zip(a, b):
                same(u, v)
            return
        if a is None:
            assert b is None
            return
        np.testing.assert_allclose(a, b, rtol=tol[0], atol=tol[1])

    x = _strided(rng, (33, 10), dtype)
    xt = normal(rng, (10, 33), dtype).T  # a transposed view
    assert not xt.flags.c_contiguous
    for view in (x, xt, x[::2], x[:, 3]):
        for name in ("softmax", "log_softmax", "sigmoid", "tanh", "relu", "leaky_relu", "elu"):
            same(getattr(F, name)(view), getattr(F, name)(c(view)))
        for name in ("sigmoid", "tanh", "relu", "leaky_relu", "elu"):
            dy = xt if view.shape == xt.shape else view[::-1]
            same(getattr(F, name + "_backward")(view, dy), getattr(F, name + "_backward")(c(view), c(dy)))
    t = _strided(rng, (33, 10), dtype)
    for name in ("sum_squared_error", "mean_squared_error", "binary_cross_entropy_with_logits",
                 "sum_squared_error_backward", "mean_squared_error_backward",
                 "binary_cross_entropy_with_logits_backward"):
        same(getattr(F, name)(x, xt), getattr(F, name)(c(x), c(xt)))
        same(getattr(F, name)(x, t), getattr(F, name)(c(x), c(t)))
    p = unit(rng, (10, 66), dtype).T[::2]
    q = unit(rng, (33, 20), dtype)[:, ::2]
    for name in ("binary_cross_entropy", "binary_cross_entropy_backward"):
        same(getattr(F, name)(p, q, "sum"), getattr(F, name)(c(p), c(q), "sum"))
    lab = labels(rng, 66, 10)[::2]
    probs = probabilities(rng, (33, 20), dtype)[:, :10] * 2  # soft targets, a strided view
    for name in ("cross_entropy", "softmax_cross_entropy"):
        for target in (lab, probs, c(probs)):
            same(getattr(F, name)(x, target, "none", 0.1), getattr(F, name)(c(x), c(target), "none", 0.1))
            same(getattr(F, name)(xt, target), getattr(F, name)(c(xt), c(target)))
    yp = probabilities(rng, (33, 20), dtype)[:, ::2]
    for name in ("cross_entropy_error", "cross_entropy_error_backward"):
        same(getattr(F, name)(yp, lab), getattr(F, name)(c(yp), c(lab)))
        same(getattr(F, name)(yp, probs), getattr(F, name)(c(yp), c(probs)))
    W = normal(rng, (7, 10), dtype).T  # (10, 7) view
    b = normal(rng, (14,), dtype)[::2]
    same(F.matmul(x, W), F.matmul(c(x), c(W)))
    same(F.matmul(W, x, trans_a=True, trans_b=True), F.matmul(c(W), c(x), trans_a=True, trans_b=True))
    for act in ACTIVATIONS:
        same(F.linear(x, W, b, act), F.linear(c(x), c(W), c(b), act))
        y = _strided(rng, (33, 7), dtype)
        dy = _strided(rng, (33, 7), dtype)
        same(F.linear_backward(x, W, dy, y=y, activation=act),
             F.linear_backward(c(x), c(W), c(dy), y=c(y), activation=act))
    idx = np.arange(66)[::-2] % 33
    same(F.gather_rows(x, idx), F.gather_rows(c(x), c(idx)))
    np.testing.assert_array_equal(F.gather_rows(x, idx), x[idx])


# -------------------------------------------- the textbook's worked numbers

Y3 = [[0.3, 0.1, 0.6], [0.3, 0.5, 0.2], [0.4, 0.1, 0.5]]
Y3_FIRST_SWAPPED = [[0.6, 0.1, 0.3], [0.3, 0.5, 0.2], [0.4, 0.1, 0.5]]
Y10 = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_worked_numbers_batch_cross_entropy_error(backend, dtype):
    tol = 1e-5
    one_hot = np.eye(3, dtype=dtype)
    for y, value in ((Y3, 0.86342), (Y3_FIRST_SWAPPED, 0.63237)):
        y = np.array(y, dtype=dtype)
        assert F.cross_entropy_error(y, one_hot) == pytest.approx(value, abs=tol)
        assert F.cross_entropy_error(y, np.array([0, 1, 2])) == pytest.approx(value, abs=tol)
        assert F.cross_entropy_error(y, [0, 1, 2]) == pytest.approx(value, abs=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_worked_numbers_binary_cross_entropy(backend, dtype):
    p = np.array([0.5, 0.7, 0.3, 0.2, 0.7, 0.9], dtype=dtype)
    t = np.array([0, 1, 0, 0, 1, 1], dtype=dtype)
    assert F.binary_cross_entropy(p, t) == pytest.approx(0.348613, abs=1e-6)
    assert F.binary_cross_entropy(p, [0, 1, 0, 0, 1, 1]) == pytest.approx(0.348613, abs=1e-6)
    assert F.binary_cross_entropy(p, t, "sum") == pytest.approx(6 * 0.3486127, abs=6e-6)
    # the same through the logits: z = logit(p)
    z = np.log(p.astype(np.float64) / (1 - p.astype(np.float64))).astype(dtype)
    assert F.binary_cross_entropy_with_logits(z, t) == pytest.approx(0.348613, abs=2e-6)


def test_worked_numbers_squared_errors(backend):
    y, t = [1, 3, 5, 6, 7], [3, 2, 7, 5, 8]
    assert F.sum_squared_error(y, t) == pytest.approx(5.5, rel=1e-12)
    assert F.mean_squared_error(y, t) == pytest.approx(2.2, rel=1e-12)
    assert F.mean_squared_error(y, t, "sum") == pytest.approx(11.0, rel=1e-12)
    np.testing.assert_allclose(F.mean_squared_error(y, t, "none"), [4, 1, 4, 1, 1], rtol=1e-12)
    np.testing.assert_allclose(F.sum_squared_error_backward(y, t), [-2, 1, -2, 1, -1], rtol=1e-12)
    np.testing.assert_allclose(F.mean_squared_error_backward(y, t), np.array([-2, 1, -2, 1, -1]) * 2 / 5, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_worked_numbers_single_sample(backend, dtype):
    y = np.array(Y10, dtype=dtype)
    t_one_hot = np.eye(10, dtype=dtype)[2]
    assert F.sum_squared_error(y, t_one_hot) == pytest.approx(0.0975, abs=1e-6)
    assert F.cross_entropy_error(y, t_one_hot) == pytest.approx(0.510825, abs=1e-6)
    assert F.cross_entropy_error(y, 2) == pytest.approx(0.510825, abs=1e-6)
    assert F.cross_entropy_error(y, np.array([2])) == pytest.approx(0.510825, abs=1e-6)
    assert F.cross_entropy_error(y[None], np.array([2])) == pytest.approx(0.510825, abs=1e-6)
    # a wrong guess costs what the textbook says: label 7 has y = 0.1
    assert F.cross_entropy_error(y, 7) == pytest.approx(2.302584, abs=1e-6)
    # label 3 has y = 0: the 1e-7 guard gives -log(1e-7), not inf
    assert F.cross_entropy_error(y, 3) == pytest.approx(16.118096, abs=1e-5)


def test_closed_form_small_cases(backend):
    np.testing.assert_allclose(F.softmax([0.0, np.log(3.0)]), [0.25, 0.75], rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax([[0.0, 0.0]]), [[-np.log(2)] * 2], rtol=1e-12)
    np.testing.assert_allclose(F.sigmoid([0.0, np.log(3.0)]), [0.5, 0.75], rtol=1e-12)
    np.testing.assert_allclose(F.relu([-1.0, 0.0, 2.0]), [0, 0, 2])
    np.testing.assert_allclose(F.leaky_relu([-1.0, 2.0], 0.1), [-0.1, 2.0], rtol=1e-12)
    np.testing.assert_allclose(F.elu([-np.log(2.0), 2.0], 2.0), [-1.0, 2.0], rtol=1e-12)
    np.testing.assert_allclose(F.tanh([np.log(2.0)]), [0.6], rtol=1e-12)
    # CE of uniform logits over C classes is log C; smoothing cannot change that
    assert F.cross_entropy(np.zeros((2, 4)), [1, 3]) == pytest.approx(np.log(4), rel=1e-12)
    assert F.cross_entropy(np.zeros((2, 4)), [1, 3], label_smoothing=0.3) == pytest.approx(np.log(4), rel=1e-12)
    # logits [0, log 3]: p = [1/4, 3/4]
    z = np.array([[0.0, np.log(3.0)]])
    assert F.cross_entropy(z, [0]) == pytest.approx(np.log(4), rel=1e-12)
    loss, grad = F.softmax_cross_entropy(z, [1], label_smoothing=0.5)  # t' = [1/4, 3/4]
    assert loss == pytest.approx(-(0.25 * np.log(0.25) + 0.75 * np.log(0.75)), rel=1e-12)
    np.testing.assert_allclose(grad, [[0.0, 0.0]], atol=1e-15)
    assert F.binary_cross_entropy_with_logits([0.0], [1.0]) == pytest.approx(np.log(2), rel=1e-12)
    np.testing.assert_allclose(F.matmul([[1, 2], [3, 4]], [[5], [6]]), [[17], [39]])
    np.testing.assert_allclose(F.linear([[1.0, 2.0]], [[1.0], [1.0]], [-4.0], activation="relu"), [[0.0]])
    dx, dW, db = F.linear_backward([[1.0, 2.0]], [[3.0], [4.0]], [[1.0]])
    np.testing.assert_allclose(dx, [[3.0, 4.0]])
    np.testing.assert_allclose(dW, [[1.0], [2.0]])
    np.testing.assert_allclose(db, [1.0])


# ------------------------------------------------------------------ stability

@pytest.fixture
def strict_floats():
    """Warnings are errors, and overflow / division by zero / invalid raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            yield


BIG = 1e4


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_are_stable(backend, strict_floats, dtype):
    z = np.array([[BIG, -BIG, 0.0], [-BIG, -BIG, -BIG], [BIG, BIG, -BIG]], dtype=dtype)
    p = np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]])
    logp = np.array([[0, -2 * BIG, -BIG], [-np.log(3)] * 3, [-np.log(2), -np.log(2), -2 * BIG - np.log(2)]])
    rtol = tolerances(dtype)[0]
    np.testing.assert_allclose(F.softmax(z), p, rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(F.log_softmax(z), logp, rtol=rtol)
    np.testing.assert_allclose(F.softmax(z[0]), p[0], rtol=rtol, atol=1e-30)

    lab = np.array([1, 0, 2])
    rows = np.array([2 * BIG, np.log(3), 2 * BIG + np.log(2)])
    np.testing.assert_allclose(F.cross_entropy(z, lab, "none"), rows, rtol=rtol)
    assert F.cross_entropy(z, lab) == pytest.approx(rows.mean(), rel=rtol)
    loss, grad = F.softmax_cross_entropy(z, lab, "sum")
    assert loss == pytest.approx(rows.sum(), rel=rtol)
    np.testing.assert_allclose(grad, p - np.eye(3)[lab], rtol=rtol, atol=1e-6)
    # smoothing 0.1 on row 0 with label 0: 0.9 * 0 + 0.1 * mean(lse - z) = 0.1 * (BIG - 0)
    assert F.cross_entropy(z[:1], [0], label_smoothing=0.1) == pytest.approx(0.1 * BIG, rel=rtol)
    loss, grad = F.softmax_cross_entropy(z[:1], [0], label_smoothing=0.1)
    assert loss == pytest.approx(0.1 * BIG, rel=rtol)
    np.testing.assert_allclose(grad, [p[0] - (0.9 * np.eye(3)[0] + 0.1 / 3)], rtol=rtol, atol=1e-6)
    # probability targets
    probs = np.array([[0.5, 0.5, 0.0]], dtype=dtype)
    assert F.cross_entropy(z[:1], probs) == pytest.approx(BIG, rel=rtol)
    assert F.softmax_cross_entropy(z[:1], probs)[0] == pytest.approx(BIG, rel=rtol)

    zz = np.array([BIG, -BIG, BIG, -BIG, 0.0], dtype=dtype)
    tt = np.array([1, 0, 0, 1, 1], dtype=dtype)
    per = np.array([0, 0, BIG, BIG, np.log(2)])
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(zz, tt, "none"), per, rtol=rtol, atol=1e-30)
    assert F.binary_cross_entropy_with_logits(zz, tt) == pytest.approx(per.mean(), rel=rtol)
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits_backward(zz, tt, "sum"),
                               [0, 0, 1, -1, -0.5], rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(F.sigmoid(zz), [1, 0, 1, 0, 0.5], rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(F.tanh(zz), [1, -1, 1, -1, 0], rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(F.elu(zz), [BIG, -1, BIG, -1, 0], rtol=rtol, atol=1e-30)
    for out in (F.softmax(z), F.log_softmax(z), F.sigmoid(zz)):
        assert out.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_with_huge_preactivations_is_stable(backend, strict_floats, dtype):
    x = np.array([[1.0], [-1.0]], dtype=dtype)
    W = np.array([[BIG, -BIG, 0.0]], dtype=dtype)
    np.testing.assert_allclose(F.linear(x, W, activation="sigmoid"), [[1, 0, 0.5], [0, 1, 0.5]], atol=1e-30)
    np.testing.assert_allclose(F.linear(x, W, activation="tanh"), [[1, -1, 0], [-1, 1, 0]], atol=1e-30)


def test_bce_on_saturated_probabilities_is_finite_without_warnings(backend, strict_floats):
    """torch clamps each log at -100: p = 0 or 1 gives 100 for a wrong target, 0 for a right one."""
    p = np.array([0.0, 1.0, 0.0, 1.0])
    t = np.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(F.binary_cross_entropy(p, t, "none"), [100, 100, 0, 0])
    assert F.binary_cross_entropy(p, t) == pytest.approx(50.0)
    grad = F.binary_cross_entropy_backward(p, t, "sum")
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [-1e12, 1e12, 0, 0])


# ---------------------------------------------------------------- bad input

def _bad_calls():
    x = np.ones((3, 4))
    lab = np.array([0, 1, 3])
    # (id, call, exception type)
    return [
        # a wrong kind of argument -> TypeError
        ("softmax-str", lambda: F.softmax("abc"), TypeError),
        ("softmax-strarr", lambda: F.softmax(np.array(["a", "b"])), TypeError),
        ("sigmoid-object", lambda: F.sigmoid(np.array([1.0, None], dtype=object)), TypeError),
        ("relu-none", lambda: F.relu(None), TypeError),
        ("tanh-complex", lambda: F.tanh(np.array([1j])), TypeError),
        ("mse-str-target", lambda: F.mean_squared_error(x, np.full((3, 4), "1")), TypeError),
        ("bce-object", lambda: F.binary_cross_entropy(np.full(3, 0.5, dtype=object), np.ones(3)), TypeError),
        ("matmul-str", lambda: F.matmul(x, np.full((4, 2), "x")), TypeError),
        ("linear-str-bias", lambda: F.linear(x, np.ones((4, 2)), np.array(["a", "b"])), TypeError),
        ("ce-str-logits", lambda: F.cross_entropy(np.full((3, 4), "a"), lab), TypeError),
        ("leaky-slope-str", lambda: F.leaky_relu(x, "0.1"), TypeError),
        ("gather-float-index", lambda: F.gather_rows(x, np.array([0.0, 1.0])), TypeError),
        ("smoothing-str", lambda: F.cross_entropy(x, lab, label_smoothing="0.1"), TypeError),
        # a wrong shape -> ValueError
        ("mse-shapes", lambda: F.mean_squared_error(np.ones((3, 4)), np.ones((4, 3))), ValueError),
        ("sse-shapes", lambda: F.sum_squared_error(np.ones(3), np.ones(4)), ValueError),
        ("sse-backward-shapes", lambda: F.sum_squared_error_backward(np.ones(3), np.ones(4)), ValueError),
        ("mse-backward-shapes", lambda: F.mean_squared_error_backward(np.ones(3), np.ones((3, 1))), ValueError),
        ("bce-shapes", lambda: F.binary_cross_entropy(np.full(3, 0.5), np.ones(4)), ValueError),
        ("bce-backward-shapes", lambda: F.binary_cross_entropy_backward(np.full(3, 0.5), np.ones(4)), ValueError),
        ("bcel-shapes", lambda: F.binary_cross_entropy_with_logits(np.ones(3), np.ones(2)), ValueError),
        ("bcel-backward-shapes", lambda: F.binary_cross_entropy_with_logits_backward(np.ones(3), np.ones(2)),
         ValueError),
        ("sigmoid-backward-shapes", lambda: F.sigmoid_backward(np.ones(3), np.ones(4)), ValueError),
        ("relu-backward-shapes", lambda: F.relu_backward(np.ones((2, 3)), np.ones((3, 2))), ValueError),
        ("elu-backward-shapes", lambda: F.elu_backward(np.ones(3), np.ones(4)), ValueError),
        ("softmax-3d", lambda: F.softmax(np.ones((2, 3, 4))), ValueError),
        ("log-softmax-3d", lambda: F.log_softmax(np.ones((2, 3, 4))), ValueError),
        ("ce-probs-shape", lambda: F.cross_entropy(x, np.ones((3, 5)) / 5), ValueError),
        ("ce-labels-length", lambda: F.cross_entropy(x, np.array([0, 1])), ValueError),
        ("sce-labels-length", lambda: F.softmax_cross_entropy(x, np.array([0, 1, 2, 3])), ValueError),
        ("ce-labels-2d", lambda: F.cross_entropy(x, np.zeros((3, 1), dtype=np.int64)), ValueError),
        ("cee-3d", lambda: F.cross_entropy_error(np.ones((2, 3, 4)) / 4, np.array([0, 1])), ValueError),
        ("cee-labels-length", lambda: F.cross_entropy_error(x / 4, np.array([0, 1])), ValueError),
        ("matmul-inner", lambda: F.matmul(np.ones((3, 4)), np.ones((3, 4))), ValueError),
        ("matmul-inner-trans", lambda: F.matmul(np.ones((3, 4)), np.ones((4, 3)), trans_a=True), ValueError),
        ("matmul-1d", lambda: F.matmul(np.ones(3), np.ones((3, 1))), ValueError),
        ("linear-features", lambda: F.linear(x, np.ones((5, 2))), ValueError),
        ("linear-bias-shape", lambda: F.linear(x, np.ones((4, 2)), np.ones(3)), ValueError),
        ("linear-activation", lambda: F.linear(x, np.ones((4, 2)), activation="softmax"), ValueError),
        ("linear-backward-dy", lambda: F.linear_backward(x, np.ones((4, 2)), np.ones((3, 3))), ValueError),
        ("linear-backward-no-y", lambda: F.linear_backward(x, np.ones((4, 2)), np.ones((3, 2)),
                                                           activation="relu"), ValueError),
        ("linear-backward-y-shape", lambda: F.linear_backward(x, np.ones((4, 2)), np.ones((3, 2)),
                                                              y=np.ones((2, 3)), activation="tanh"), ValueError),
        ("linear-backward-x-activation", lambda: F.linear_backward(x, np.ones((4, 2)), np.ones((3, 2)),
                                                                   x_activation="softmax"), ValueError),
        # labels out of range -> IndexError
        ("ce-label-high", lambda: F.cross_entropy(x, np.array([0, 1, 4])), IndexError),
        ("ce-label-negative", lambda: F.cross_entropy(x, np.array([0, -1, 2])), IndexError),
        ("sce-label-high", lambda: F.softmax_cross_entropy(x, np.array([9, 1, 2])), IndexError),
        ("cee-label-high", lambda: F.cross_entropy_error(x / 4, np.array([0, 1, 4])), IndexError),
        ("cee-backward-label-high", lambda: F.cross_entropy_error_backward(x / 4, np.array([0, 1, 4])), IndexError),
        ("cee-1d-label-high", lambda: F.cross_entropy_error(np.ones(4) / 4, 4), IndexError),
        ("ce-label-uint-high", lambda: F.cross_entropy(x, np.array([0, 1, 4], dtype=np.uint8)), IndexError),
        ("gather-index-high", lambda: F.gather_rows(x, np.array([0, 3])), IndexError),
        ("gather-index-negative", lambda: F.gather_rows(x, np.array([-1])), IndexError),
        # labels that are not integers where labels are required
        ("ce-float-labels", lambda: F.cross_entropy(x, np.array([0.0, 1.0, 2.0])), ValueError),
        ("cee-float-labels", lambda: F.cross_entropy_error(x / 4, np.array([0.0, 1.0, 2.0])), ValueError),
        # bad reduction / bad parameter value -> ValueError
        ("mse-reduction", lambda: F.mean_squared_error(x, x, reduction="avg"), ValueError),
        ("mse-backward-reduction", lambda: F.mean_squared_error_backward(x, x, reduction="MEAN"), ValueError),
        ("ce-reduction", lambda: F.cross_entropy(x, lab, reduction=None), ValueError),
        ("sce-reduction", lambda: F.softmax_cross_entropy(x, lab, reduction="max"), ValueError),
        ("bce-reduction", lambda: F.binary_cross_entropy(x / 2, x, reduction="batchmean"), ValueError),
        ("bce-backward-reduction", lambda: F.binary_cross_entropy_backward(x / 2, x, reduction=""), ValueError),
        ("bcel-reduction", lambda: F.binary_cross_entropy_with_logits(x, x, reduction="elementwise"), ValueError),
        ("bcel-backward-reduction", lambda: F.binary_cross_entropy_with_logits_backward(x, x, reduction=1),
         ValueError),
        ("smoothing-negative", lambda: F.cross_entropy(x, lab, label_smoothing=-0.1), ValueError),
        ("smoothing-above-one", lambda: F.softmax_cross_entropy(x, lab, label_smoothing=1.5), ValueError),
        ("smoothing-nan", lambda: F.cross_entropy(x, lab, label_smoothing=float("nan")), ValueError),
        # an empty batch has no mean
        ("mse-empty", lambda: F.mean_squared_error(np.ones((0, 3)), np.ones((0, 3))), ValueError),
        ("bce-empty", lambda: F.binary_cross_entropy(np.ones(0), np.ones(0)), ValueError),
        ("bcel-empty", lambda: F.binary_cross_entropy_with_logits(np.ones((0, 2)), np.ones((0, 2))), ValueError),
        ("ce-empty", lambda: F.cross_entropy(np.ones((0, 3)), np.zeros(0, dtype=np.int64)), ValueError),
        ("sce-empty", lambda: F.softmax_cross_entropy(np.ones((0, 3)), np.zeros(0, dtype=np.int64)), ValueError),
        ("cee-empty", lambda: F.cross_entropy_error(np.ones((0, 3)), np.zeros(0, dtype=np.int64)), ValueError),
    ]


BAD_IDS = [c[0] for c in _bad_calls()]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_raises_the_same_exception_on_every_backend(backend, case):
    _, call, exc = next(c for c in _bad_calls() if c[0] == case)
    with pytest.raises(exc) as info:
        call()
    # exactly that builtin type, so that every backend agrees (no subclasses such as AxisError)
    assert type(info.value) is exc, f"raised {type(info.value).__name__}, expected {exc.__name__}"
    assert str(info.value), "the error message is empty"


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates(backend, dtype):
    x = normal(np.random.default_rng(3), (5, 4), dtype)
    x[2, 1] = np.nan
    with np.errstate(invalid="ignore"):
        for name in ("softmax", "log_softmax"):
            y = getattr(F, name)(x)
            assert np.all(np.isnan(y[2])), f"{name}: the NaN row is not all NaN: {y[2]}"
            clean = np.delete(x, 2, axis=0)
            np.testing.assert_allclose(np.delete(y, 2, axis=0), getattr(REF, name)(up(clean)),
                                       rtol=tolerances(dtype)[0], atol=1e-6)
        for name in ("sigmoid", "tanh", "relu", "leaky_relu", "elu"):
            y = getattr(F, name)(x)
            assert np.isnan(y[2, 1]), f"{name}(nan) = {y[2, 1]}"
            assert np.isnan(y).sum() == 1, f"{name}: NaN spread to other elements"
        saved = np.abs(np.nan_to_num(x)) + 0.5
        for name in ("sigmoid_backward", "tanh_backward", "relu_backward", "leaky_relu_backward", "elu_backward"):
            g = getattr(F, name)(saved, x)  # a NaN upstream gradient
            assert np.isnan(g[2, 1]) and np.isnan(g).sum() == 1, f"{name} with dy = nan gave {g[2, 1]}"
        g = F.elu_backward(x, np.ones_like(x))  # a NaN input inside elu's exp
        assert np.isnan(g[2, 1])
        t = np.zeros_like(x)
        lab = np.array([0, 1, 1, 2, 3])
        assert np.isnan(F.sum_squared_error(x, t))
        assert np.isnan(F.mean_squared_error(x, t))
        assert np.isnan(F.mean_squared_error(x, t, "none")[2, 1])
        assert np.isnan(F.cross_entropy(x, lab))
        assert np.isnan(F.cross_entropy(x, lab, "none")[2])
        loss, grad = F.softmax_cross_entropy(x, lab)
        assert np.isnan(loss) and np.all(np.isnan(grad[2]))
        assert np.isnan(F.binary_cross_entropy_with_logits(x, t))
        assert np.isnan(F.binary_cross_entropy_with_logits_backward(x, t)[2, 1])
        p = np.full((5, 4), 0.25, dtype=dtype)
        p[2, 1] = np.nan
        assert np.isnan(F.binary_cross_entropy(p, t))
        assert np.isnan(F.binary_cross_entropy_backward(p, t)[2, 1])
        assert np.isnan(F.cross_entropy_error(p, lab))
        assert np.isnan(F.cross_entropy_error(p, np.eye(4, dtype=dtype)[lab]))
        assert np.isnan(F.cross_entropy_error_backward(p, lab)[2, 1])
        y = F.matmul(x, np.ones((4, 3), dtype=dtype))
        assert np.all(np.isnan(y[2])) and not np.isnan(np.delete(y, 2, axis=0)).any()
        for act in ACTIVATIONS:
            y = F.linear(x, np.ones((4, 3), dtype=dtype), np.zeros(3, dtype=dtype), activation=act)
            assert np.all(np.isnan(y[2])), f"linear(activation={act!r}) dropped a NaN: {y[2]}"
            assert not np.isnan(np.delete(y, 2, axis=0)).any()


def test_cross_entropy_error_nan_anywhere_in_y_gives_nan_with_one_hot_targets(backend):
    """-sum(t * log(y + 1e-7)): a NaN where t = 0 still makes 0 * NaN = NaN, as in the reference."""
    y = np.full((2, 3), 1 / 3)
    y[0, 2] = np.nan
    t = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with np.errstate(invalid="ignore"):
        assert np.isnan(F.cross_entropy_error(y, t))
        assert np.isnan(F.cross_entropy_error_backward(y, t)[0, 2])


def test_integer_inputs_are_computed_in_float64(backend):
    xi = np.arange(-6, 6).reshape(3, 4)
    xf = xi.astype(np.float64)
    for name in ("softmax", "log_softmax", "sigmoid", "tanh", "relu", "leaky_relu", "elu"):
        got = getattr(F, name)(xi)
        assert got.dtype == np.float64, name
        np.testing.assert_allclose(got, getattr(F, name)(xf), rtol=1e-12, atol=1e-300)
        assert getattr(F, name)(xi.tolist()).dtype == np.float64
    assert F.sigmoid(np.array([True, False])).dtype == np.float64
    ti = np.array([[0, 1, 1, 0]] * 3)
    assert F.mean_squared_error(xi, ti) == pytest.approx(np.mean((xf - ti) ** 2), rel=1e-12)
    assert F.binary_cross_entropy_with_logits(xi, ti.astype(bool)) == \
        pytest.approx(F.binary_cross_entropy_with_logits(xf, ti.astype(float)), rel=1e-12)
    assert F.cross_entropy(xi, np.array([0, 1, 3])) == \
        pytest.approx(F.cross_entropy(xf, np.array([0, 1, 3])), rel=1e-12)
    got = F.matmul(xi, xi.T)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, xf @ xf.T)
    got = F.linear(xi, np.ones((4, 2), dtype=np.int32), np.array([1, 2]))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, xf @ np.ones((4, 2)) + [1, 2])
    # a float target keeps the prediction's dtype; integers take it
    p32 = np.full((2, 2), 0.5, dtype=np.float32)
    assert F.binary_cross_entropy(p32, np.array([[0, 1], [1, 0]]), "none").dtype == np.float32
    # float16 is computed in float32
    assert F.sigmoid(np.zeros(3, dtype=np.float16)).dtype == np.float32
    # non-native byte order is converted, not misread
    big_endian = xf.astype(">f8")
    np.testing.assert_allclose(F.softmax(big_endian), F.softmax(xf), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_only_inputs_are_accepted_and_left_alone(backend, rng, dtype):
    x = normal(rng, (7, 3), dtype)
    W = normal(rng, (3, 5), dtype)
    b = normal(rng, (5,), dtype)
    lab = labels(rng, 7, 3)
    for a in (x, W, b, lab):
        a.flags.writeable = False
    copies = [a.copy() for a in (x, W, b, lab)]
    F.softmax(x), F.log_softmax(x), F.sigmoid(x), F.relu(x), F.elu(x)
    F.relu_backward(x, x), F.elu_backward(x, x)
    F.cross_entropy(x, lab), F.softmax_cross_entropy(x, lab), F.mean_squared_error(x, x)
    F.binary_cross_entropy_with_logits(x, x), F.cross_entropy_error(F.softmax(x), lab)
    F.matmul(x, W), F.linear(x, W, b, "relu")
    y = F.linear(x, W, b, "relu")
    y.flags.writeable = False
    F.linear_backward(x, W, y, y=y, activation="relu")
    F.gather_rows(x, lab)
    for a, c in zip((x, W, b, lab), copies):
        np.testing.assert_array_equal(a, c)


def test_empty_batches_for_sum_and_none(backend):
    e = np.ones((0, 3))
    assert F.mean_squared_error(e, e, "sum") == 0.0
    assert F.mean_squared_error(e, e, "none").shape == (0, 3)
    assert F.binary_cross_entropy_with_logits(e, e, "sum") == 0.0
    assert F.softmax(e).shape == (0, 3)
    assert F.sigmoid(e).shape == (0, 3)
    assert F.matmul(e, np.ones((3, 2))).shape == (0, 2)
    assert F.linear(e, np.ones((3, 2)), np.ones(2)).shape == (0, 2)
    dx, dW, db = F.linear_backward(e, np.ones((3, 2)), np.ones((0, 2)))
    assert dx.shape == (0, 3)
    np.testing.assert_array_equal(dW, np.zeros((3, 2)))
    np.testing.assert_array_equal(db, np.zeros(2))
