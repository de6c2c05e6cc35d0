"""Layers and losses: each backward against central finite differences in
float64, the fused Sequential path against the unfused layers, and the whole
MLP's gradients against PyTorch when it is installed."""
import numpy as np
import pytest

from fastnn import nn, optim


def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to array x (in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = f()
        flat[i] = old - eps
        lo = f()
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * eps)
    return g


def check_layer(layer, x, rng, atol=1e-6):
    """d/dx and d/dparams of sum(w * layer(x)) against finite differences."""
    w = rng.standard_normal(layer.forward(x).shape)

    def scalar():
        return float(np.sum(w * layer.forward(x)))

    layer.forward(x)
    dx = layer.backward(w)
    np.testing.assert_allclose(dx, numeric_grad(scalar, x), rtol=1e-5, atol=atol)
    for name, p in layer.named_parameters():
        layer.forward(x)
        layer.backward(w)
        analytic = p.grad.copy()
        np.testing.assert_allclose(analytic, numeric_grad(scalar, p.data), rtol=1e-5, atol=atol, err_msg=name)


@pytest.mark.parametrize("make", [
    lambda: nn.Linear(5, 4, seed=1, dtype=np.float64),
    lambda: nn.Linear(5, 4, bias=False, init="xavier", seed=2, dtype=np.float64),
    nn.ReLU, nn.Sigmoid, nn.Tanh,
    lambda: nn.LeakyReLU(0.1), lambda: nn.ELU(0.7),
], ids=["linear", "linear-nobias", "relu", "sigmoid", "tanh", "leaky_relu", "elu"])
def test_layer_backward_matches_finite_differences(backend, rng, make):
    x = rng.standard_normal((6, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kinks of relu-like functions
    check_layer(make(), x, rng)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "leaky_relu", "elu"])
def test_mlp_backward_matches_finite_differences(backend, rng, activation):
    model = nn.MLP([5, 7, 6, 3], activation, seed=3, dtype=np.float64)
    x = rng.standard_normal((4, 5))
    check_layer(model, x, rng, atol=1e-5)


def test_dropout_is_inverted_and_off_in_eval(backend):
    layer = nn.Dropout(0.25, seed=0)
    x = np.ones((400, 50))
    y = layer.forward(x)
    kept = y != 0
    # The kept count is Binomial(20000, 0.75): within 5 sigma (5 x 0.0031) of 0.75,
    # a window that a seeded run stays in and a keep rate off by 2% leaves.
    sigma = np.sqrt(0.75 * 0.25 / kept.size)
    assert abs(kept.mean() - 0.75) < 5 * sigma, (kept.mean(), sigma)
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    dout = np.full_like(x, 2.0)
    np.testing.assert_allclose(layer.backward(dout), np.where(kept, 2 / 0.75, 0))
    layer.eval()
    assert layer.forward(x) is x


def test_sequential_fused_equals_unfused(backend, rng):
    """MLP runs Linear+ReLU fused; running each layer on its own must give the same numbers."""
    model = nn.MLP([8, 6, 5, 3], "tanh", seed=4, dtype=np.float64)
    x = rng.standard_normal((7, 8))
    w = rng.standard_normal((7, 3))
    y = model.forward(x)
    dx = model.backward(w)
    grads = [p.grad.copy() for p in model.parameters()]
    h = x
    for layer in model.layers:
        h = layer.forward(h)
    np.testing.assert_allclose(y, h, rtol=1e-12)
    g = w
    for layer in reversed(model.layers):
        g = layer.backward(g)
    np.testing.assert_allclose(dx, g, rtol=1e-12)
    for p, expected in zip(model.parameters(), grads):
        np.testing.assert_allclose(p.grad, expected, rtol=1e-12)


def test_sequential_output_is_not_overwritten_by_next_call(backend, rng):
    model = nn.MLP([4, 8, 2], seed=0)
    a = model(rng.standard_normal((3, 4)).astype(np.float32))
    kept = a.copy()
    model(rng.standard_normal((3, 4)).astype(np.float32))
    np.testing.assert_array_equal(a, kept)


def test_need_input_grad_false_skips_dx(backend, rng):
    model = nn.MLP([4, 8, 2], seed=0)
    model(rng.standard_normal((3, 4)).astype(np.float32))
    assert model.backward(np.ones((3, 2), np.float32), need_input_grad=False) is None
    assert all(p.grad is not None for p in model.parameters())


def test_zero_grad_clears_every_gradient_so_a_step_changes_nothing(backend, rng):
    model = nn.MLP([4, 8, 2], seed=0)
    model(rng.standard_normal((3, 4)).astype(np.float32))
    model.backward(np.ones((3, 2), np.float32))
    assert all(p.grad is not None and np.any(p.grad != 0) for p in model.parameters())
    before = [p.data.copy() for p in model.parameters()]
    model.zero_grad()
    assert [p.grad for p in model.parameters()] == [None] * 4
    optim.SGD(model.parameters(), lr=0.1, momentum=0.9).step()  # parameters without a gradient are skipped
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


def test_initialisation_is_seeded_he_or_xavier():
    a, b = nn.Linear(400, 300, seed=5), nn.Linear(400, 300, seed=5)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert a.weight.data.dtype == np.float32
    assert abs(a.weight.data.std() - np.sqrt(2 / 400)) < 0.003
    xavier = nn.Linear(400, 300, init="xavier", seed=5)
    assert abs(xavier.weight.data.std() - np.sqrt(2 / 700)) < 0.003
    np.testing.assert_array_equal(a.bias.data, 0)
    sig = nn.MLP([400, 300, 10], "sigmoid", seed=1)
    assert abs(sig.layers[0].weight.data.std() - np.sqrt(2 / 700)) < 0.003


def test_state_dict_roundtrip_and_mismatch():
    a, b = nn.MLP([4, 5, 3], seed=1), nn.MLP([4, 5, 3], seed=2)
    b.load_state_dict(a.state_dict())
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    assert sorted(a.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    with pytest.raises(KeyError):
        b.load_state_dict({"0.weight": a.state_dict()["0.weight"]})
    with pytest.raises(ValueError):
        nn.MLP([4, 6, 3]).load_state_dict(a.state_dict())


def test_linear_rejects_wrong_input_shape():
    with pytest.raises(ValueError, match="expects x of shape"):
        nn.Linear(4, 3)(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError):
        nn.Linear(0, 3)
    with pytest.raises(ValueError):
        nn.MLP([4], "relu")
    with pytest.raises(ValueError):
        nn.MLP([4, 3], "softplus")


@pytest.mark.parametrize("loss_cls, make_target", [
    (nn.CrossEntropyLoss, lambda rng, shape: rng.integers(0, shape[1], shape[0])),
    (nn.MSELoss, lambda rng, shape: rng.standard_normal(shape)),
    (nn.BCEWithLogitsLoss, lambda rng, shape: rng.random(shape)),
], ids=["cross_entropy", "mse", "bce_with_logits"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_backward_matches_finite_differences(backend, rng, loss_cls, make_target, reduction):
    pred = rng.standard_normal((5, 4))
    target = make_target(rng, pred.shape)
    loss = loss_cls(reduction=reduction)
    loss.forward(pred, target)
    analytic = loss.backward().copy()
    np.testing.assert_allclose(analytic, numeric_grad(lambda: loss.forward(pred, target), pred), rtol=1e-5, atol=1e-7)


def test_bce_loss_backward_matches_finite_differences(backend, rng):
    p = rng.uniform(0.05, 0.95, (5, 3))
    t = rng.random((5, 3))
    loss = nn.BCELoss()
    loss.forward(p, t)
    analytic = loss.backward().copy()
    np.testing.assert_allclose(analytic, numeric_grad(lambda: loss.forward(p, t), p), rtol=1e-5, atol=1e-7)


def test_mlp_gradients_match_torch(backend, rng, torch):
    model = nn.MLP([6, 8, 7, 4], "relu", seed=7, dtype=np.float64)
    x = rng.standard_normal((5, 6))
    labels = rng.integers(0, 4, 5)
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    value = loss.forward(model.forward(x), labels)
    model.backward(loss.backward())

    layers = [layer for layer in model.layers if isinstance(layer, nn.Linear)]
    tw = [torch.tensor(layer.weight.data, requires_grad=True) for layer in layers]
    tb = [torch.tensor(layer.bias.data, requires_grad=True) for layer in layers]
    h = torch.tensor(x)
    for k, (w, b) in enumerate(zip(tw, tb)):
        h = h @ w + b
        if k < len(tw) - 1:
            h = torch.relu(h)
    t_loss = torch.nn.functional.cross_entropy(h, torch.tensor(labels), label_smoothing=0.1)
    t_loss.backward()
    assert abs(value - t_loss.item()) < 1e-12
    for layer, w, b in zip(layers, tw, tb):
        np.testing.assert_allclose(layer.weight.grad, w.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.bias.grad, b.grad.numpy(), rtol=1e-10, atol=1e-12)
