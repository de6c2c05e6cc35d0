"""fastnn.numerical_gradient and fastnn.gradcheck: the textbook's gradient check."""
import numpy as np
import pytest

import fastnn
from fastnn import nn


# ------------------------------------------------------------ numerical_gradient

def test_numerical_gradient_of_the_textbooks_function_2():
    # f(x0, x1) = x0^2 + x1^2 has gradient (2 x0, 2 x1): (6, 8) at (3, 4), (0, 4) at (0, 2).
    def function_2(x):
        return np.sum(x ** 2)

    np.testing.assert_allclose(fastnn.numerical_gradient(function_2, np.array([3.0, 4.0])), [6.0, 8.0], atol=1e-7)
    np.testing.assert_allclose(fastnn.numerical_gradient(function_2, np.array([0.0, 2.0])), [0.0, 4.0], atol=1e-7)


def test_numerical_gradient_matches_analytic_gradients_of_matrix_functions(rng):
    A = rng.standard_normal((4, 3))
    W = rng.standard_normal((3, 5))
    t = rng.standard_normal((4, 5))
    # f(W) = 0.5 * ||A W - t||^2  ->  A^T (A W - t)
    grad = fastnn.numerical_gradient(lambda w: 0.5 * np.sum((A @ w - t) ** 2), W)
    np.testing.assert_allclose(grad, A.T @ (A @ W - t), rtol=1e-7, atol=1e-8)
    # f(W) = sum(sin(W) * exp(W))  ->  (cos + sin) exp, elementwise
    grad = fastnn.numerical_gradient(lambda w: np.sum(np.sin(w) * np.exp(w)), W, eps=1e-6)
    np.testing.assert_allclose(grad, (np.cos(W) + np.sin(W)) * np.exp(W), rtol=1e-7, atol=1e-8)
    assert grad.shape == W.shape and grad.dtype == np.float64


def test_numerical_gradient_restores_x_exactly(rng):
    x = rng.standard_normal((3, 4))
    before = x.copy()
    fastnn.numerical_gradient(lambda v: np.sum(np.tanh(v) * 1e3), x, eps=1e-3)
    np.testing.assert_array_equal(x, before)

    calls = []

    def fails_on_the_third_call(v):
        calls.append(v.copy())
        if len(calls) == 3:
            raise RuntimeError("boom")
        return float(v.sum())

    with pytest.raises(RuntimeError, match="boom"):
        fastnn.numerical_gradient(fails_on_the_third_call, x)
    np.testing.assert_array_equal(x, before)
    # the third call saw the second element perturbed: the perturbation is in place
    assert calls[2].flat[1] == before.flat[1] + 1e-4 and calls[2].flat[0] == before.flat[0]


def test_numerical_gradient_perturbs_one_element_at_a_time_in_place():
    x = np.zeros(3)
    seen = []
    fastnn.numerical_gradient(lambda v: seen.append(v.copy()) or 0.0, x, eps=0.5)
    np.testing.assert_array_equal(seen, [[0.5, 0, 0], [-0.5, 0, 0], [0, 0.5, 0], [0, -0.5, 0],
                                         [0, 0, 0.5], [0, 0, -0.5]])


def test_numerical_gradient_refuses_what_it_cannot_do():
    f = np.sum
    with pytest.raises(TypeError, match="float64"):
        fastnn.numerical_gradient(f, np.ones(3, np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        fastnn.numerical_gradient(f, [1.0, 2.0])
    with pytest.raises(TypeError, match="callable"):
        fastnn.numerical_gradient(3.0, np.ones(3))
    read_only = np.ones(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        fastnn.numerical_gradient(f, read_only)
    with pytest.raises(ValueError, match="scalar"):
        fastnn.numerical_gradient(lambda v: v * 2, np.ones(3))
    for eps in (0.0, -1e-4, np.inf, np.nan):
        with pytest.raises(ValueError, match="eps"):
            fastnn.numerical_gradient(f, np.ones(3), eps=eps)
    with pytest.raises(TypeError, match="eps"):
        fastnn.numerical_gradient(f, np.ones(3), eps="1e-4")


# ---------------------------------------------------------------------- gradcheck

@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_gradcheck_finds_backprop_right_on_every_backend(backend, rng, activation):
    model = nn.MLP([6, 5, 4, 3], activation=activation, seed=1, dtype=np.float64)
    x = rng.standard_normal((7, 6))
    y = rng.integers(0, 3, 7)
    before = model.state_dict()
    diffs = fastnn.gradcheck(model, nn.CrossEntropyLoss(), x, y)
    assert list(diffs) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert all(0 <= d < 1e-8 for d in diffs.values()), diffs
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_gradcheck_with_mse_and_float_targets(rng):
    model = nn.Sequential(nn.Linear(4, 3, seed=0, dtype=np.float64), nn.Tanh(),
                          nn.Linear(3, 2, bias=False, seed=1, dtype=np.float64))
    x = rng.standard_normal((5, 4)).astype(np.float32)  # cast to float64 by gradcheck
    diffs = fastnn.gradcheck(model, nn.MSELoss(), x, rng.standard_normal((5, 2)).astype(np.float32))
    assert list(diffs) == ["0.weight", "0.bias", "2.weight"]
    assert max(diffs.values()) < 1e-8, diffs


class _LinearWithOffsetGradient(nn.Linear):
    """A Linear whose weight gradient is off by +offset in every element."""

    offset = 0.0

    def backward(self, dout, *args, **kwargs):
        dx = super().backward(dout, *args, **kwargs)
        self.weight.grad = self.weight.grad + self.offset
        return dx


def test_gradcheck_reports_the_mean_absolute_difference(rng):
    layer = _LinearWithOffsetGradient(3, 2, seed=0, dtype=np.float64)
    x, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer.offset = 0.0
    exact = fastnn.gradcheck(layer, nn.MSELoss(), x, t)
    assert list(exact) == ["weight", "bias"] and max(exact.values()) < 1e-9, exact
    # the backprop gradient matches MSE's closed form
    np.testing.assert_allclose(layer.weight.grad, x.T @ (2 * (x @ layer.weight.data + layer.bias.data - t) / t.size),
                               rtol=1e-12)
    for offset in (0.25, -3e-3):
        layer.offset = offset
        diffs = fastnn.gradcheck(layer, nn.MSELoss(), x, t)
        assert diffs["weight"] == pytest.approx(abs(offset), abs=1e-9)
        assert diffs["bias"] < 1e-9


class _SigmoidWithWrongDerivative(nn.Sigmoid):
    """dL/dx = dout * y: the (1 - y) factor is missing."""

    def backward(self, dout):
        return dout * self._saved


def test_gradcheck_detects_a_wrong_backward(rng):
    model = nn.Sequential(nn.Linear(5, 4, seed=0, dtype=np.float64), _SigmoidWithWrongDerivative(),
                          nn.Linear(4, 3, seed=1, dtype=np.float64))
    x, y = rng.standard_normal((6, 5)), rng.integers(0, 3, 6)
    diffs = fastnn.gradcheck(model, nn.CrossEntropyLoss(), x, y)
    # the layers below the wrong derivative get wrong gradients, the one above does not
    assert diffs["0.weight"] > 1e-3 and diffs["0.bias"] > 1e-3, diffs
    assert diffs["2.weight"] < 1e-8 and diffs["2.bias"] < 1e-8, diffs


def test_gradcheck_needs_float64_parameters(rng):
    model = nn.MLP([4, 3, 2])  # float32
    with pytest.raises(TypeError, match="float64.*0.weight.*float32"):
        fastnn.gradcheck(model, nn.CrossEntropyLoss(), rng.standard_normal((2, 4)), [0, 1])
    with pytest.raises(ValueError, match="no parameters"):
        fastnn.gradcheck(nn.Sequential(nn.ReLU()), nn.MSELoss(), np.ones((2, 3)), np.ones((2, 3)))


def test_public_names():
    assert "gradcheck" in fastnn.__all__ and "numerical_gradient" in fastnn.__all__
    import fastnn.gradient_check as module
    assert fastnn.gradcheck is module.gradcheck and fastnn.numerical_gradient is module.numerical_gradient
