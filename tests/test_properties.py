"""Property tests (hypothesis): every kernel, through fastnn.functional on the
cpp and numba backends, against the NumPy reference backend
(`fastnn.backends.load('numpy')`) evaluated in float64.

Shapes, dtypes (float32 / float64), memory layouts (C, Fortran, strided,
reversed: fastnn.functional must copy them once and give the contiguous
result) and values (hypothesis' floats: zeros, repeated values, extremes of the
drawn range) are all drawn. Optimizer updates, which have no functional
wrapper, are compared backend module against backend module.

Tolerances: float32 results against the float64 reference within
~1e-5 relative (elementwise) or 1e-5 of the sum of |terms| (reductions, GEMM);
float64 within ~1e-10. Budget: max_examples=30 per test, whole file < 60 s.
"""
import contextlib

import numpy as np
import pytest

from conftest import need

hypothesis = need("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import fastnn  # noqa: E402
import fastnn.functional as F  # noqa: E402
from fastnn import backends  # noqa: E402

REF = backends.load("numpy")
BACKENDS = ["cpp", "numba"]
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@contextlib.contextmanager
def active(name):
    previous = fastnn.backend()
    fastnn.set_backend(name)
    try:
        yield
    finally:
        fastnn.set_backend(previous)


# ----------------------------------------------------------------- strategies

dtypes = st.sampled_from([np.float32, np.float64])
rows = st.integers(1, 12)
cols = st.integers(1, 70)  # crosses every SIMD width's tail (4, 8, 16 floats)


def floats(dtype, lo, hi):
    if dtype == np.float32:  # bounds exactly representable in float32, inside [lo, hi]
        lo32, hi32 = np.float32(lo), np.float32(hi)
        lo = float(lo32 if lo32 >= lo else np.nextafter(lo32, np.float32(np.inf)))
        hi = float(hi32 if hi32 <= hi else np.nextafter(hi32, np.float32(-np.inf)))
    return st.floats(lo, hi, width=32 if dtype == np.float32 else 64, allow_nan=False, allow_infinity=False,
                     allow_subnormal=False)


@st.composite
def array(draw, shape, dtype, lo=-8.0, hi=8.0):
    return draw(hnp.arrays(dtype, shape, elements=floats(dtype, lo, hi)))


@st.composite
def laid_out(draw, a):
    """a's values in a drawn memory layout (a view that is usually not C-contiguous)."""
    kind = draw(st.sampled_from(["C", "F", "strided", "reversed"]))
    if kind == "C" or a.ndim == 0:
        return a
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "strided":
        big = np.zeros(a.shape[:-1] + (a.shape[-1] * 2,), a.dtype)
        view = big[..., ::2]
        view[...] = a
        return view
    return np.ascontiguousarray(a[::-1])[::-1]


def labels(draw, n, c):
    return np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)


# ---------------------------------------------------------------- comparison

def rtol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-10


def close(got, want, dtype, scale=None, what=""):
    """got (backend, dtype) against want (float64 reference): NaN where NaN,
    and |got - want| <= rtol * (|want| + scale) + tiny."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN pattern differs"
    fin = np.isfinite(want)
    assert np.array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)]), f"{what}: inf differs"
    scale = np.abs(want) if scale is None else np.abs(want) + np.asarray(scale, dtype=np.float64)
    tiny = 1e-30 if dtype == np.float64 else 1e-12
    err = np.abs(got - want)[fin]
    bound = (rtol(dtype) * (scale + 1e-6) + tiny)[fin] if np.ndim(scale) else rtol(dtype) * (scale + 1e-6) + tiny
    assert np.all(err <= bound), f"{what}: max error {err.max():.3g}, bound {np.min(bound):.3g}"


def check_dtype(result, dtype):
    if isinstance(result, np.ndarray):
        assert result.dtype == dtype, (result.dtype, dtype)


def f64(a):
    return np.ascontiguousarray(a, dtype=np.float64)


# -------------------------------------------------------------- activations

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fname", ["softmax", "log_softmax", "sigmoid", "tanh", "relu", "leaky_relu", "elu"])
@SETTINGS
@given(data=st.data(), dtype=dtypes, n=rows, c=cols)
def test_rowwise_and_elementwise(backend, fname, data, dtype, n, c):
    x = data.draw(array((n, c), dtype, -30.0, 30.0), "x")
    one_d = fname in ("softmax", "log_softmax") and data.draw(st.booleans(), "1-D")
    if one_d:
        x = x[0]
    view = data.draw(laid_out(x), "layout")
    params = {}
    if fname == "leaky_relu":
        params["negative_slope"] = data.draw(st.floats(0, 1), "slope")
    if fname == "elu":
        params["alpha"] = data.draw(st.floats(0.1, 3), "alpha")
    with active(backend):
        got = getattr(F, fname)(view, **params)
    x2 = f64(x).reshape(1, -1) if one_d else f64(x)
    want = getattr(REF, fname)(x2, **params).reshape(got.shape)
    check_dtype(got, dtype)
    close(got, want, dtype, scale=1.0 if fname == "log_softmax" else 1e-6, what=f"{fname} {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fname", ["sigmoid_backward", "tanh_backward", "relu_backward", "leaky_relu_backward",
                                   "elu_backward"])
@SETTINGS
@given(data=st.data(), dtype=dtypes, n=rows, c=cols)
def test_activation_backward(backend, fname, data, dtype, n, c):
    lo, hi = (0.0, 1.0) if fname == "sigmoid_backward" else (-1.0, 1.0) if fname == "tanh_backward" else (-5.0, 5.0)
    saved = data.draw(array((n, c), dtype, lo, hi), "saved")
    dy = data.draw(array((n, c), dtype), "dy")
    params = {}
    if fname == "leaky_relu_backward":
        params["negative_slope"] = data.draw(st.floats(0, 1), "slope")
    if fname == "elu_backward":
        params["alpha"] = data.draw(st.floats(0.1, 3), "alpha")
    with active(backend):
        got = getattr(F, fname)(data.draw(laid_out(saved), "layout saved"), data.draw(laid_out(dy), "layout dy"),
                                **params)
    want = getattr(REF, fname)(f64(saved), f64(dy), **params)
    check_dtype(got, dtype)
    close(got, want, dtype, scale=np.abs(dy) * 4, what=f"{fname} {backend}")


# ------------------------------------------------------------------- losses

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fname", ["sum_squared_error", "mean_squared_error", "binary_cross_entropy",
                                   "binary_cross_entropy_with_logits"])
@SETTINGS
@given(data=st.data(), dtype=dtypes, n=rows, c=cols, reduction=st.sampled_from(["mean", "sum", "none"]))
def test_elementwise_losses(backend, fname, data, dtype, n, c, reduction):
    lo, hi = (0.0, 1.0) if fname == "binary_cross_entropy" else (-20.0, 20.0)
    pred = data.draw(array((n, c), dtype, lo, hi), "pred")
    t = data.draw(array((n, c), dtype, 0.0, 1.0), "t")
    kw = {} if fname == "sum_squared_error" else {"reduction": reduction}
    with active(backend):
        got = getattr(F, fname)(data.draw(laid_out(pred), "layout"), t, **kw)
        grad = getattr(F, fname + "_backward")(pred, data.draw(laid_out(t), "layout t"), **kw)
    with np.errstate(all="ignore"):
        per = getattr(REF, fname if fname != "sum_squared_error" else "mean_squared_error")(
            f64(pred), f64(t), reduction="none")
        want = getattr(REF, fname)(f64(pred), f64(t), **kw)
        want_grad = getattr(REF, fname + "_backward")(f64(pred), f64(t), **kw)
    # Rounding of one element's loss in the input dtype: ~eps * (size of the terms that cancel).
    p64, t64 = f64(pred), f64(t)
    with np.errstate(all="ignore"):
        if fname == "binary_cross_entropy":
            terms = np.minimum(np.abs(np.log(p64)), 100) + np.minimum(np.abs(np.log1p(-p64)), 100)
        elif fname == "binary_cross_entropy_with_logits":
            terms = np.abs(p64) + np.abs(per) + 1
        else:
            terms = np.abs(per) + 1e-6
    if reduction == "none" and fname != "sum_squared_error":
        close(got, want, dtype, scale=terms * 4, what=f"{fname} none {backend}")
    else:
        total = terms.sum() / (pred.size if reduction == "mean" and fname != "sum_squared_error" else 1)
        close(got, want, dtype, scale=total * 4, what=f"{fname} {reduction} {backend}")
    g_scale = 1.0 / pred.size if reduction == "mean" and fname != "sum_squared_error" else 1.0
    if fname == "binary_cross_entropy":  # (p - t) / max(p (1 - p), 1e-12): rounding of p(1 - p) is amplified
        g_scale = np.abs(want_grad) * 10 + g_scale
    close(grad, want_grad, dtype, scale=g_scale * 40, what=f"{fname}_backward {reduction} {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=st.data(), dtype=dtypes, n=rows, c=st.integers(1, 40), one_hot=st.booleans())
def test_cross_entropy_error(backend, data, dtype, n, c, one_hot):
    y = data.draw(array((n, c), dtype, 1e-4, 1.0), "y")
    t = labels(data.draw, n, c)
    target = np.eye(c, dtype=dtype)[t] if one_hot else t
    with active(backend):
        got = F.cross_entropy_error(data.draw(laid_out(y), "layout"), target)
        grad = F.cross_entropy_error_backward(y, target)
    tt = np.eye(c)[t] if one_hot else t
    want = REF.cross_entropy_error(f64(y), tt)
    want_grad = REF.cross_entropy_error_backward(f64(y), tt)
    close(got, want, dtype, scale=abs(want) + 1, what=f"cross_entropy_error {backend}")
    close(grad, want_grad, dtype, scale=np.abs(want_grad), what=f"cross_entropy_error_backward {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=st.data(), dtype=dtypes, n=rows, c=cols, probs=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]), smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_cross_entropy_and_fused_gradient(backend, data, dtype, n, c, probs, reduction, smoothing):
    logits = data.draw(array((n, c), dtype, -30.0, 30.0), "logits")
    if probs:
        raw = data.draw(array((n, c), np.float64, 0.0, 1.0), "t") + 1e-3
        target = (raw / raw.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        target = labels(data.draw, n, c)
    view = data.draw(laid_out(logits), "layout")
    with active(backend):
        loss = F.cross_entropy(view, target, reduction=reduction, label_smoothing=smoothing)
        fused_loss, grad = F.softmax_cross_entropy(view, target, reduction=reduction, label_smoothing=smoothing)
    t64 = f64(target) if probs else target
    want = REF.cross_entropy(f64(logits), t64, reduction, smoothing)
    want_loss, want_grad = REF.softmax_cross_entropy(f64(logits), t64, reduction, smoothing)
    # |loss| terms are up to ~60 (logit range) per row: scale by the logits' size
    scale = (np.abs(logits).max() + 1) * (1 if reduction != "sum" else n)
    close(loss, want, dtype, scale=scale, what=f"cross_entropy {reduction} {backend}")
    close(fused_loss, want_loss, dtype, scale=scale, what=f"softmax_cross_entropy loss {reduction} {backend}")
    close(grad, want_grad, dtype, scale=1.0 / (n if reduction == "mean" else 1), what=f"dlogits {backend}")
    check_dtype(grad, dtype)


# ------------------------------------------------------------------- linear

def gemm_scale(a, b):
    return np.abs(f64(a)) @ np.abs(f64(b))


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=st.data(), dtype=dtypes, m=st.integers(0, 40), n=st.integers(0, 70), k=st.integers(0, 60),
       trans_a=st.booleans(), trans_b=st.booleans())
def test_matmul(backend, data, dtype, m, n, k, trans_a, trans_b):
    a = data.draw(array((k, m) if trans_a else (m, k), dtype), "a")
    b = data.draw(array((n, k) if trans_b else (k, n), dtype), "b")
    with active(backend):
        got = F.matmul(data.draw(laid_out(a), "layout a"), data.draw(laid_out(b), "layout b"),
                       trans_a=trans_a, trans_b=trans_b)
    oa, ob = (a.T if trans_a else a), (b.T if trans_b else b)
    want = f64(oa) @ f64(ob)
    check_dtype(got, dtype)
    close(got, want, dtype, scale=gemm_scale(oa, ob) * 4, what=f"matmul {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=st.data(), dtype=dtypes, n=st.integers(0, 30), fin=st.integers(1, 50), fout=st.integers(1, 50),
       activation=st.sampled_from(["none", "relu", "sigmoid", "tanh"]), bias=st.booleans())
def test_linear_and_backward(backend, data, dtype, n, fin, fout, activation, bias):
    x = data.draw(array((n, fin), dtype, -2, 2), "x")
    W = data.draw(array((fin, fout), dtype, -1, 1), "W")
    b = data.draw(array((fout,), dtype, -1, 1), "b") if bias else None
    dy = data.draw(array((n, fout), dtype, -1, 1), "dy")
    with active(backend):
        y = F.linear(data.draw(laid_out(x), "layout x"), data.draw(laid_out(W), "layout W"), b, activation=activation)
        dx, dW, db = F.linear_backward(x, W, data.draw(laid_out(dy), "layout dy"),
                                       y if activation != "none" else None, activation=activation)
    z_scale = gemm_scale(x, W) + (np.abs(b) if bias else 0) + 1
    want_y = REF.linear(f64(x), f64(W), None if b is None else f64(b), activation)
    close(y, want_y, dtype, scale=z_scale * 4, what=f"linear {activation} {backend}")
    # The backward from the backend's own y (as a layer would do it).
    wdx, wdW, wdb = REF.linear_backward(f64(x), f64(W), f64(dy), None if activation == "none" else f64(y), activation)
    close(dW, wdW, dtype, scale=gemm_scale(x.T, np.abs(dy)) * 4 + 1e-6, what=f"dW {backend}")
    close(db, wdb, dtype, scale=np.abs(dy).sum(axis=0) * 4 + 1e-6, what=f"db {backend}")
    close(dx, wdx, dtype, scale=gemm_scale(np.abs(dy), W.T) * 4 + 1e-6, what=f"dx {backend}")
    for g in (y, dx, dW, db):
        check_dtype(g, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8]),
       n=st.integers(1, 30), d=st.integers(0, 20), k=st.integers(0, 40))
def test_gather_rows(backend, data, dtype, n, d, k):
    x = np.arange(n * d).reshape(n, d).astype(dtype)
    index = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k)), dtype=np.int64)
    with active(backend):
        got = F.gather_rows(data.draw(laid_out(x), "layout"), index)
    np.testing.assert_array_equal(got, x[index])
    assert got.dtype == x.dtype


# --------------------------------------------------------------- optimizers

def _optimizer_case(draw, name, dtype, n):
    param = draw(array((n,), dtype, -2, 2))
    grad = draw(array((n,), dtype, -2, 2))
    lr = draw(st.sampled_from([1e-3, 1e-2, 0.1]))
    wd = draw(st.sampled_from([0.0, 0.01]))
    maximize = draw(st.booleans())
    if name == "sgd_step":
        momentum = draw(st.sampled_from([0.0, 0.9]))
        state = [draw(array((n,), dtype, -1, 1))]
        kw = dict(lr=lr, momentum=momentum, dampening=draw(st.sampled_from([0.0, 0.1])),
                  nesterov=momentum > 0 and draw(st.booleans()), weight_decay=wd, maximize=maximize,
                  first_step=draw(st.booleans()))
    elif name == "adagrad_step":
        state = [draw(array((n,), dtype, 0, 2))]
        kw = dict(step=float(draw(st.integers(1, 100))), lr=lr, lr_decay=draw(st.sampled_from([0.0, 0.01])),
                  weight_decay=wd, eps=1e-10, maximize=maximize)
    elif name == "rmsprop_step":
        centered = draw(st.booleans())
        momentum = draw(st.sampled_from([0.0, 0.9]))
        sq = draw(array((n,), dtype, 0.5, 2))
        state = [sq, draw(array((n,), dtype, -0.5, 0.5)), draw(array((n,), dtype, -1, 1))]
        kw = dict(lr=lr, alpha=0.99, eps=1e-8, weight_decay=wd, momentum=momentum, centered=centered,
                  maximize=maximize)
    else:
        state = [draw(array((n,), dtype, -1, 1)), draw(array((n,), dtype, 0, 2))]
        kw = dict(step=float(draw(st.integers(1, 1000))), lr=lr, beta1=0.9, beta2=0.999, eps=1e-8,
                  weight_decay=wd, decoupled_weight_decay=draw(st.booleans()), maximize=maximize)
    return param, grad, state, kw


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["sgd_step", "adagrad_step", "rmsprop_step", "adam_step"])
@SETTINGS
@given(data=st.data(), dtype=dtypes, n=st.integers(1, 200))
def test_optimizer_steps(backend, name, data, dtype, n):
    param, grad, state, kw = _optimizer_case(data.draw, name, dtype, n)
    mine = [param.copy()] + [s.copy() for s in state]
    ref = [f64(param)] + [f64(s) for s in state]
    getattr(backends.load(backend), name)(mine[0], grad, *mine[1:], **kw)
    getattr(REF, name)(ref[0], f64(grad), *ref[1:], **kw)
    for i, (m, r) in enumerate(zip(mine, ref)):
        assert m.dtype == dtype
        close(m, r, dtype, scale=np.abs(r) + np.abs(f64(grad)) + 1, what=f"{name} array {i} {backend}")


# ------------------------------------------------------------ NaN and Inf

@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=st.data(), dtype=dtypes, n=rows, c=cols,
       fname=st.sampled_from(["softmax", "log_softmax", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
                              "softmax_cross_entropy", "matmul", "linear"]))
def test_nan_and_inf_propagate_like_the_reference(backend, data, dtype, n, c, fname):
    """NaN / +-inf planted at drawn positions: the same outputs are NaN, the
    same are +-inf, as in the NumPy reference run in the same dtype."""
    x = data.draw(array((n, c), dtype, -5, 5), "x")
    k = data.draw(st.integers(1, min(4, x.size)), "how many")
    for _ in range(k):
        i, j = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, c - 1))
        x[i, j] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    W = np.linspace(-1, 1, c * 3).reshape(c, 3).astype(dtype)
    t = labels(data.draw, n, c)
    call = {
        "softmax_cross_entropy": lambda mod, x: mod.softmax_cross_entropy(x, t, "none"),
        "matmul": lambda mod, x: mod.matmul(x, W),
        "linear": lambda mod, x: mod.linear(x, W, None, "relu"),
    }.get(fname, lambda mod, x: getattr(mod, fname)(x))
    with np.errstate(all="ignore"):
        with active(backend):
            got = call(F, x.copy())
        want = call(REF, x.copy())
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        g, w = np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64)
        assert np.array_equal(np.isnan(g), np.isnan(w)), f"{fname} {backend}: NaN positions differ"
        assert np.array_equal(np.isposinf(g), np.isposinf(w)) and np.array_equal(np.isneginf(g), np.isneginf(w)), \
            f"{fname} {backend}: inf positions differ"
