"""fastnn.functional against torch (CPU) on every backend: forward values and,
through autograd, the backward kernels. Skipped when torch is not installed.
Optimizers are tested elsewhere."""
import numpy as np
import pytest

import fastnn.functional as F

from conftest import ACTIVATION_CASES, need

torch = need("torch")
TF = torch.nn.functional

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (7, 3), (33, 10), (64, 257)]
REDUCTIONS = ["mean", "sum", "none"]


def shape_id(shape):
    return "x".join(map(str, shape))


def tol(dtype, n=1):
    root = max(1.0, float(np.sqrt(n)))
    if np.dtype(dtype) == np.float64:
        return dict(rtol=1e-10, atol=1e-12 * root)
    return dict(rtol=max(1e-5, 3e-7 * root), atol=1e-6 * root)


def close(actual, expected, dtype, n=1, what=""):
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    if np.ndim(expected) > 0:
        assert isinstance(actual, np.ndarray) and actual.dtype == np.dtype(dtype), \
            f"{what}: got {type(actual).__name__} {getattr(actual, 'dtype', None)}"
        assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    else:
        assert np.ndim(actual) == 0, f"{what}: expected a scalar, got shape {np.shape(actual)}"
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected.astype(np.float64),
                               err_msg=what, **tol(dtype, n))


def tensor(a, grad=False):
    return torch.tensor(a, requires_grad=grad)


@pytest.fixture(autouse=True)
def _torch_single_thread(torch):  # the conftest fixture: also sets one thread
    yield


# ------------------------------------------------------------ softmax family

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(10,)], ids=shape_id)
def test_softmax_and_log_softmax(backend, rng, shape, dtype):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    close(F.softmax(x), torch.softmax(tensor(x), dim=-1), dtype, shape[-1], "softmax")
    close(F.log_softmax(x), torch.log_softmax(tensor(x), dim=-1), dtype, shape[-1], "log_softmax")


# --------------------------------------------------------------- cross-entropy

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["labels", "probs"])
def test_cross_entropy_and_its_gradient(backend, rng, kind, reduction, smoothing, shape, dtype):
    n, c = shape
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    if kind == "labels":
        target = rng.integers(0, c, size=n)
        t_target = torch.tensor(target)
    else:
        p = rng.uniform(size=shape)
        target = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
        t_target = tensor(target)
    z = tensor(logits, grad=True)
    expected = TF.cross_entropy(z, t_target, reduction=reduction, label_smoothing=smoothing)
    expected.sum().backward()  # 'none': the gradient of the summed row losses
    what = f"cross_entropy {kind} {reduction} ls={smoothing}"
    terms = c if reduction == "none" else logits.size  # each row's loss sums one row; mean and sum all of them
    close(F.cross_entropy(logits, target, reduction=reduction, label_smoothing=smoothing), expected, dtype,
          terms, what)
    loss, dlogits = F.softmax_cross_entropy(logits, target, reduction=reduction, label_smoothing=smoothing)
    close(loss, expected, dtype, terms, "softmax_" + what)
    close(dlogits, z.grad, dtype, 1, "dlogits of " + what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_1d_logits(backend, rng, dtype):
    logits = (rng.standard_normal(6) * 2).astype(dtype)
    z = tensor(logits, grad=True)
    expected = TF.cross_entropy(z, torch.tensor(4), label_smoothing=0.2)
    expected.backward()
    close(F.cross_entropy(logits, 4, label_smoothing=0.2), expected, dtype)
    loss, dlogits = F.softmax_cross_entropy(logits, 4, label_smoothing=0.2)
    close(loss, expected, dtype)
    close(dlogits, z.grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ["labels", "one_hot"])
def test_textbook_cross_entropy_error_is_nll_of_log_y_plus_eps(backend, rng, target, dtype):
    y = rng.uniform(0.01, 1, size=(33, 10))
    y = (y / y.sum(axis=1, keepdims=True)).astype(dtype)
    lab = rng.integers(0, 10, size=33)
    t = lab if target == "labels" else np.eye(10, dtype=dtype)[lab]
    yt = tensor(y, grad=True)
    expected = TF.nll_loss(torch.log(yt + 1e-7), torch.tensor(lab))
    expected.backward()
    close(F.cross_entropy_error(y, t), expected, dtype, y.size)
    close(F.cross_entropy_error_backward(y, t), yt.grad, dtype)


# --------------------------------------------------------------- binary CE

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(10,)], ids=shape_id)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_and_its_gradient(backend, rng, reduction, shape, dtype):
    p = rng.uniform(0.01, 0.99, size=shape).astype(dtype)
    t = rng.uniform(size=shape).astype(dtype)
    t.flat[::2] = np.round(t.flat[::2])
    pt = tensor(p, grad=True)
    expected = TF.binary_cross_entropy(pt, tensor(t), reduction=reduction)
    expected.sum().backward()
    close(F.binary_cross_entropy(p, t, reduction), expected, dtype, p.size, "bce")
    close(F.binary_cross_entropy_backward(p, t, reduction), pt.grad, dtype, 1, "bce grad")


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # tested in test_functional
def test_binary_cross_entropy_saturated(backend):
    """torch clamps log at -100 and divides the gradient by max(p (1 - p), 1e-12)."""
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1e-30])
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    pt = tensor(p, grad=True)
    expected = TF.binary_cross_entropy(pt, tensor(t), reduction="sum")
    expected.backward()
    close(F.binary_cross_entropy(p, t, "sum"), expected, np.float64)
    # torch's 1e-12 floor is a float32 constant (9.99999996e-13): a 4e-9 relative difference
    np.testing.assert_allclose(F.binary_cross_entropy_backward(p, t, "sum"), pt.grad.numpy(), rtol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(10,)], ids=shape_id)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits_and_its_gradient(backend, rng, reduction, shape, dtype):
    z = (rng.standard_normal(shape) * 5).astype(dtype)
    z.flat[::7] = 1e4 * np.sign(z.flat[::7])  # saturated logits too
    t = rng.uniform(size=shape).astype(dtype)
    t.flat[::2] = np.round(t.flat[::2])
    zt = tensor(z, grad=True)
    expected = TF.binary_cross_entropy_with_logits(zt, tensor(t), reduction=reduction)
    expected.sum().backward()
    close(F.binary_cross_entropy_with_logits(z, t, reduction), expected, dtype, z.size, "bce_logits")
    close(F.binary_cross_entropy_with_logits_backward(z, t, reduction), zt.grad, dtype, 1, "bce_logits grad")


# ---------------------------------------------------------- squared errors

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(10,)], ids=shape_id)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mean_squared_error_and_its_gradient(backend, rng, reduction, shape, dtype):
    y, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    yt = tensor(y, grad=True)
    expected = TF.mse_loss(yt, tensor(t), reduction=reduction)
    expected.sum().backward()
    close(F.mean_squared_error(y, t, reduction), expected, dtype, y.size, "mse")
    close(F.mean_squared_error_backward(y, t, reduction), yt.grad, dtype, 1, "mse grad")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_squared_error_is_half_the_summed_mse(backend, rng, dtype):
    y, t = rng.standard_normal((33, 10)).astype(dtype), rng.standard_normal((33, 10)).astype(dtype)
    yt = tensor(y, grad=True)
    expected = 0.5 * TF.mse_loss(yt, tensor(t), reduction="sum")
    expected.backward()
    close(F.sum_squared_error(y, t), expected, dtype, y.size)
    close(F.sum_squared_error_backward(y, t), yt.grad, dtype)


# -------------------------------------------------------------- activations

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(1000,)], ids=shape_id)
@pytest.mark.parametrize("case", list(ACTIVATION_CASES))
def test_activation_and_its_gradient(backend, rng, case, shape, dtype):
    name = case.split("-")[0]
    params, saved = ACTIVATION_CASES[case]
    torch_op = getattr(torch, name) if hasattr(torch, name) else getattr(TF, name)  # torch.sigmoid, TF.elu

    def torch_fn(v):
        return torch_op(v, *params)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x.flat[::5] = np.where(np.abs(x.flat[::5]) < 0.01, 0.5, x.flat[::5])  # no differences at the kink
    dy = rng.standard_normal(shape).astype(dtype)
    xt = tensor(x, grad=True)
    expected = torch_fn(xt)
    (expected * tensor(dy)).sum().backward()
    y = getattr(F, name)(x, *params)
    close(y, expected, dtype, 1, name)
    grad = getattr(F, name + "_backward")(y if saved == "y" else x, dy, *params)
    close(grad, xt.grad, dtype, 1, name + "_backward")


# ------------------------------------------------------------------- linear

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (33, 10), (64, 300)], ids=shape_id)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["none", "relu", "sigmoid", "tanh"])
def test_linear_forward_and_backward(backend, rng, activation, bias, shape, dtype):
    n, n_in = shape
    n_out = {1: 1, 3: 5, 10: 17, 300: 65}[n_in]
    x = rng.standard_normal((n, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)  # fastnn's W is (in, out)
    b = rng.standard_normal(n_out).astype(dtype) if bias else None
    dy = rng.standard_normal((n, n_out)).astype(dtype)
    xt, Wt = tensor(x, grad=True), tensor(W, grad=True)
    bt = tensor(b if bias else np.zeros(n_out, dtype=dtype), grad=True)
    z = TF.linear(xt, Wt.T, bt)  # torch's weight is (out, in)
    expected = {"none": z, "relu": torch.relu(z), "sigmoid": torch.sigmoid(z), "tanh": torch.tanh(z)}[activation]
    (expected * tensor(dy)).sum().backward()
    y = F.linear(x, W, b, activation=activation)
    close(y, expected, dtype, n_in, f"linear {activation}")
    dx, dW, db = F.linear_backward(x, W, dy, y=None if activation == "none" else y, activation=activation)
    close(dx, xt.grad, dtype, n_out, "dx")
    close(dW, Wt.grad, dtype, n, "dW")
    close(db, bt.grad, dtype, n, "db")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 3), (33, 10), (128, 256)], ids=shape_id)
@pytest.mark.parametrize("x_activation", ["relu", "sigmoid", "tanh"])
def test_linear_backward_through_x_activation(backend, rng, x_activation, shape, dtype):
    n, n_in = shape
    n_out = {3: 5, 10: 17, 256: 128}[n_in]
    u = rng.standard_normal((n, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    dy = rng.standard_normal((n, n_out)).astype(dtype)
    ut = tensor(u, grad=True)
    act = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[x_activation]
    (TF.linear(act(ut), tensor(W).T) * tensor(dy)).sum().backward()
    x = getattr(F, x_activation)(u)
    du = F.linear_backward(x, W, dy, x_activation=x_activation)[0]
    close(du, ut.grad, dtype, n_out, f"du {x_activation}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("trans_a", [False, True])
def test_matmul(backend, rng, trans_a, trans_b, dtype):
    a = rng.standard_normal((40, 70) if not trans_a else (70, 40)).astype(dtype)
    b = rng.standard_normal((70, 30) if not trans_b else (30, 70)).astype(dtype)
    at, bt = tensor(a), tensor(b)
    expected = (at.T if trans_a else at) @ (bt.T if trans_b else bt)
    close(F.matmul(a, b, trans_a=trans_a, trans_b=trans_b), expected, dtype, 70)
