"""Every backward kernel of fastnn.functional against central finite
differences of its forward, in float64, on every backend.

The forward used for the differences is the same backend's forward; a forward
that is wrong is caught by test_functional.py (worked numbers, reference) and
test_torch_parity.py, so together they pin both directions.
"""
import numpy as np
import pytest

import fastnn.functional as F

EPS = 1e-6
RTOL, ATOL = 1e-6, 1e-8
REDUCTIONS = ["mean", "sum", "none"]
ACTIVATIONS = ["none", "relu", "sigmoid", "tanh"]


def numerical_gradient(f, x, eps=EPS):
    """Central differences of the scalar function f at x (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        orig = x[i]
        x[i] = orig + eps
        f_plus = float(f(x.copy()))
        x[i] = orig - eps
        f_minus = float(f(x.copy()))
        x[i] = orig
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def assert_gradient(analytic, numeric, what):
    assert isinstance(analytic, np.ndarray) and analytic.dtype == np.float64, \
        f"{what}: got {type(analytic).__name__} {getattr(analytic, 'dtype', None)}"
    assert analytic.shape == numeric.shape, f"{what}: shape {analytic.shape}, expected {numeric.shape}"
    assert np.abs(numeric).max() > 1e-3, f"{what}: degenerate check, the gradient is ~0"
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=ATOL, err_msg=what)


def total(value):
    """A reduced loss as a float; 'none' losses are summed."""
    return float(np.sum(value))


def away_from_zero(rng, shape, low=0.1, high=2.0):
    """Values whose magnitude is in [low, high]: no kink of relu & co. within EPS."""
    return rng.uniform(low, high, size=shape) * rng.choice([-1.0, 1.0], size=shape)


# -------------------------------------------------------------- activations

from conftest import ACTIVATION_CASES


@pytest.mark.parametrize("case", list(ACTIVATION_CASES))
def test_activation_backward(backend, rng, case):
    name = case.split("-")[0]
    params, saved = ACTIVATION_CASES[case]
    forward, backward = getattr(F, name), getattr(F, name + "_backward")
    x = away_from_zero(rng, (4, 5))
    dy = rng.standard_normal((4, 5))
    numeric = numerical_gradient(lambda v: np.sum(dy * forward(v, *params)), x)
    s = forward(x, *params) if saved == "y" else x
    assert_gradient(backward(s, dy, *params), numeric, f"{case}_backward")


# ------------------------------------------------------------------- losses

def test_sum_squared_error_backward(backend, rng):
    y, t = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    numeric = numerical_gradient(lambda v: F.sum_squared_error(v, t), y)
    assert_gradient(F.sum_squared_error_backward(y, t), numeric, "sum_squared_error_backward")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mean_squared_error_backward(backend, rng, reduction):
    y, t = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    numeric = numerical_gradient(lambda v: total(F.mean_squared_error(v, t, reduction)), y)
    assert_gradient(F.mean_squared_error_backward(y, t, reduction), numeric, f"mse_backward {reduction}")


@pytest.mark.parametrize("target", ["labels", "one_hot", "1d"])
def test_cross_entropy_error_backward(backend, rng, target):
    y = rng.uniform(0.05, 1.0, size=(4, 5))
    y /= y.sum(axis=1, keepdims=True)
    lab = np.array([0, 3, 4, 3])
    if target == "labels":
        t = lab
    elif target == "one_hot":
        t = np.eye(5)[lab] * 0.7 + 0.06  # soft targets weigh every entry
    else:
        y, t = y[1], 3
    numeric = numerical_gradient(lambda v: F.cross_entropy_error(v, t), y)
    assert_gradient(F.cross_entropy_error_backward(y, t), numeric, f"cross_entropy_error_backward {target}")


def _logits_target(rng, kind):
    logits = rng.standard_normal((4, 5)) * 2
    if kind == "labels":
        return logits, np.array([0, 3, 4, 3])
    p = rng.uniform(0.0, 1.0, size=(4, 5))
    return logits, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["labels", "probs"])
def test_softmax_cross_entropy_gradient(backend, rng, kind, reduction, smoothing):
    """dlogits of the fused kernel is the gradient of cross_entropy ('none': of the sum of row losses)."""
    logits, target = _logits_target(rng, kind)
    numeric = numerical_gradient(
        lambda z: total(F.cross_entropy(z, target, reduction=reduction, label_smoothing=smoothing)), logits)
    loss, dlogits = F.softmax_cross_entropy(logits, target, reduction=reduction, label_smoothing=smoothing)
    assert_gradient(dlogits, numeric, f"softmax_cross_entropy {kind} {reduction} {smoothing}")
    np.testing.assert_allclose(np.sum(loss), total(F.cross_entropy(logits, target, reduction, smoothing)),
                               rtol=1e-12)


def test_softmax_cross_entropy_gradient_unnormalised_targets(backend, rng):
    """Probability targets that do not sum to one (torch allows them): d/dz = p * sum(t) - t."""
    logits = rng.standard_normal((4, 5))
    target = rng.uniform(0.0, 1.0, size=(4, 5))
    numeric = numerical_gradient(lambda z: F.cross_entropy(z, target, "sum", 0.1), logits)
    assert_gradient(F.softmax_cross_entropy(logits, target, "sum", 0.1)[1], numeric, "unnormalised targets")


@pytest.mark.parametrize("kind", ["labels", "probs"])
def test_softmax_cross_entropy_gradient_1d(backend, rng, kind):
    logits = rng.standard_normal(6)
    target = 2 if kind == "labels" else rng.dirichlet(np.ones(6))
    numeric = numerical_gradient(lambda z: F.cross_entropy(z, target, label_smoothing=0.1), logits)
    assert_gradient(F.softmax_cross_entropy(logits, target, label_smoothing=0.1)[1], numeric, "1-D logits")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_backward(backend, rng, reduction):
    p = rng.uniform(0.05, 0.95, size=(4, 5))
    t = rng.uniform(0.0, 1.0, size=(4, 5))
    t[0] = [0, 1, 0, 1, 1]
    numeric = numerical_gradient(lambda v: total(F.binary_cross_entropy(v, t, reduction)), p)
    assert_gradient(F.binary_cross_entropy_backward(p, t, reduction), numeric, f"bce_backward {reduction}")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits_backward(backend, rng, reduction):
    z = rng.standard_normal((4, 5)) * 3
    t = rng.uniform(0.0, 1.0, size=(4, 5))
    t[0] = [0, 1, 0, 1, 1]
    numeric = numerical_gradient(lambda v: total(F.binary_cross_entropy_with_logits(v, t, reduction)), z)
    assert_gradient(F.binary_cross_entropy_with_logits_backward(z, t, reduction), numeric,
                    f"bce_with_logits_backward {reduction}")


# ------------------------------------------------------------------- linear

@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_backward(backend, rng, activation, need_dx):
    x = rng.standard_normal((4, 5))
    W = rng.standard_normal((5, 3)) * 0.5
    b = rng.standard_normal(3) * 0.3

    def ok(z):  # away from relu's kink, with live and dead units in every column
        return np.abs(z).min() > 0.05 and (z > 0).any(axis=0).all() and (z < 0).any(axis=0).all()

    while not ok(x @ W + b):
        b = rng.standard_normal(3) * 0.3
    dy = rng.standard_normal((4, 3))

    def loss(x_, W_, b_):
        return np.sum(dy * F.linear(x_, W_, b_, activation=activation))

    y = F.linear(x, W, b, activation=activation)
    kw = {} if activation == "none" else {"y": y}
    dx, dW, db = F.linear_backward(x, W, dy, activation=activation, need_dx=need_dx, **kw)
    assert_gradient(dW, numerical_gradient(lambda v: loss(x, v, b), W), f"dW {activation}")
    assert_gradient(db, numerical_gradient(lambda v: loss(x, W, v), b), f"db {activation}")
    if need_dx:
        assert_gradient(dx, numerical_gradient(lambda v: loss(v, W, b), x), f"dx {activation}")
    else:
        assert dx is None


@pytest.mark.parametrize("activation", ["none", "relu"])
@pytest.mark.parametrize("x_activation", ["relu", "sigmoid", "tanh"])
def test_linear_backward_through_x_activation(backend, rng, x_activation, activation):
    """With x = x_activation(u), dx comes back as dL/du."""
    u = rng.standard_normal((4, 5))
    u = np.where(np.abs(u) < 0.05, 0.5, u)  # away from relu's kink
    W, b, dy = rng.standard_normal((5, 3)) * 0.5, rng.standard_normal(3) * 0.3, rng.standard_normal((4, 3))
    act_x = getattr(F, x_activation)

    def loss(u_):
        return np.sum(dy * F.linear(act_x(u_), W, b, activation=activation))

    x = act_x(u)
    y = F.linear(x, W, b, activation=activation)
    du, dW, db = F.linear_backward(x, W, dy, y=y, activation=activation, x_activation=x_activation)
    _, want_dW, want_db = F.linear_backward(x, W, dy, y=y, activation=activation)
    assert_gradient(du, numerical_gradient(loss, u), f"du {x_activation} {activation}")
    np.testing.assert_array_equal(dW, want_dW)
    np.testing.assert_array_equal(db, want_db)


def test_linear_backward_without_bias(backend, rng):
    """db is still the gradient a bias would get: the column sums of dy."""
    x, W, dy = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    dx, dW, db = F.linear_backward(x, W, dy)
    assert_gradient(dW, numerical_gradient(lambda v: np.sum(dy * F.linear(x, v)), W), "dW")
    assert_gradient(dx, numerical_gradient(lambda v: np.sum(dy * F.linear(v, W)), x), "dx")
    assert_gradient(db, numerical_gradient(lambda v: np.sum(dy * F.linear(x, W, v)), np.zeros(3)), "db")


def test_matmul_gradients(backend, rng):
    """matmul with each transpose flag, differentiated through sum(dy * op(a) @ op(b))."""
    a, b, dy = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    numeric = numerical_gradient(lambda v: np.sum(dy * F.matmul(v, b)), a)
    assert_gradient(F.matmul(dy, b, trans_b=True), numeric, "d/da of a @ b = dy @ b^T")
    numeric = numerical_gradient(lambda v: np.sum(dy * F.matmul(a, v)), b)
    assert_gradient(F.matmul(a, dy, trans_a=True), numeric, "d/db of a @ b = a^T @ dy")
