"""The sparse_input switch of nn.Linear (fastnn.sparse_input): each setting
gives the same results up to summation order, False never asks for the
block-sparse product, and the Trainer sorts batches by label only where the
setting says so."""
import numpy as np
import pytest

import fastnn
from fastnn import backends, nn, optim, sparse_input
from fastnn.backends import cpp_backend, numpy_backend

MODES = ("auto", True, False)


def mnist_like(rng, n=256, features=196, classes=10):
    """Mostly-zero rows with class-dependent nonzero positions, like MNIST's pixels."""
    labels = rng.integers(0, classes, n)
    masks = rng.random((classes, features)) < 0.2
    x = rng.random((n, features)).astype(np.float32) * (masks[labels] & (rng.random((n, features)) < 0.8))
    return x, labels


@pytest.mark.parametrize("bad", ["yes", 1, 0, None, "Auto"])
def test_modes_are_checked(bad):
    with pytest.raises(ValueError, match="sparse_input"):
        nn.Linear(4, 2, sparse_input=bad)
    with pytest.raises(ValueError, match="sparse_input"):
        nn.MLP([4, 3, 2], sparse_input=bad)


def test_the_input_is_sparse_enough_for_the_sparse_path(rng):
    # What makes the tests below meaningful: "auto" would take the block-sparse product here.
    x, _ = mnist_like(rng)
    assert fastnn._core.block_sparse(x[:128]) is not None


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_matches_the_reference(backend, rng, mode):
    x, _ = mnist_like(rng, n=128)
    model = nn.MLP([196, 64, 10], seed=1, sparse_input=mode)
    dy = rng.standard_normal((128, 10)).astype(np.float32)
    y = model.forward(x)
    dx = model.backward(dy)
    W0, W1 = model[0].weight.data.astype(np.float64), model[2].weight.data.astype(np.float64)
    h = np.maximum(x @ W0, 0)
    np.testing.assert_allclose(y, h @ W1, rtol=1e-4, atol=1e-5)
    dh = (dy @ W1.T) * (h > 0)
    np.testing.assert_allclose(model[0].weight.grad, x.T.astype(np.float64) @ dh, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model[2].weight.grad, h.T @ dy, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, dh @ W0.T, rtol=1e-4, atol=1e-5)


def _recording(monkeypatch, module):
    calls = []
    for name in ("linear", "linear_backward"):
        kernel = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _k=kernel, _n=name: (calls.append(_n), _k(*a))[1])
    return calls


def test_false_never_asks_for_the_block_sparse_product(monkeypatch, rng):
    previous = fastnn.backend()
    fastnn.set_backend("cpp")
    try:
        x, t = mnist_like(rng)
        calls = _recording(monkeypatch, cpp_backend)
        for mode, expect_calls in (("auto", True), (False, False)):
            calls.clear()
            model = nn.MLP([196, 32, 10], seed=0, sparse_input=mode)
            fastnn.Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), batch_size=128,
                           epochs=1, verbose=False).fit(x, t)
            assert bool(calls) == expect_calls, mode
    finally:
        backends.set_active(previous)


def test_modes_train_to_the_same_weights_up_to_summation_order(rng):
    previous = fastnn.backend()
    fastnn.set_backend("cpp")
    try:
        x, t = mnist_like(rng, n=512)
        weights = {}
        for mode in MODES:
            model = nn.MLP([196, 32, 10], seed=0, sparse_input=mode)
            fastnn.Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.05), batch_size=64,
                           epochs=2, seed=3, verbose=False).fit(x, t)
            weights[mode] = [p.data.copy() for p in model.parameters()]
        for mode in (True, False):
            for a, b in zip(weights["auto"], weights[mode]):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    finally:
        backends.set_active(previous)


class _Recording(nn.Sequential):
    def __init__(self, *layers):
        super().__init__(*layers)
        self.batches = []

    def forward(self, batch):
        self.batches.append(batch[:, 0].astype(int))
        return super().forward(batch)


@pytest.mark.parametrize("mode", MODES)
def test_trainer_sorts_batches_as_the_mode_says(backend, mode):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 90)
    x = np.zeros((90, 6), np.float32)
    x[:, 0] = np.arange(90)  # the first feature names the sample
    model = _Recording(nn.Linear(6, 4, seed=0, sparse_input=mode))
    fastnn.Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.0), batch_size=32,
                   epochs=1, seed=1, verbose=False).fit(x, y)
    order = np.random.default_rng(1).permutation(90)
    expect_sorted = mode is True or (mode == "auto" and backends.active().BLOCK_SPARSE)
    for k, batch in enumerate(model.batches):
        shuffled = order[32 * k:32 * (k + 1)]
        assert sorted(batch) == sorted(shuffled)
        if expect_sorted:
            assert np.all(np.diff(y[batch]) >= 0)
        else:
            np.testing.assert_array_equal(batch, shuffled)
    assert sparse_input.sorts_batches(model, backends.active()) == expect_sorted


def test_checkpoints_keep_the_mode(tmp_path):
    model = nn.MLP([6, 5, 3], sparse_input=False)
    fastnn.save(tmp_path / "m.npz", model)
    loaded = fastnn.load(tmp_path / "m.npz").model
    assert loaded.sparse_input is False
    assert [layer.sparse_input for layer in loaded.layers if isinstance(layer, nn.Linear)] == [False, False]


def test_every_backend_has_the_dense_entry_points():
    for name in backends.NAMES:
        module = backends.load(name)
        assert isinstance(module.BLOCK_SPARSE, bool)
        assert callable(module.dense_linear) and callable(module.dense_linear_backward)
    assert cpp_backend.BLOCK_SPARSE and not numpy_backend.BLOCK_SPARSE


def test_cpp_dense_entry_points_are_cores_gemm_not_the_sparse_product(rng):
    # sparse=False multiplies with _core's GEMM, bit for bit as matmul does, even where x is sparse.
    x, _ = mnist_like(rng, n=128)
    assert fastnn._core.block_sparse(x) is not None
    W = rng.standard_normal((196, 48)).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    dy = rng.standard_normal((128, 48)).astype(np.float32)
    product = fastnn._core.matmul(x, W)
    np.testing.assert_array_equal(cpp_backend.dense_linear(x, W, b, "none"), product + b)
    np.testing.assert_array_equal(cpp_backend.dense_linear(x, W, None, "relu"), np.maximum(product, 0))
    dx, dW, db = cpp_backend.dense_linear_backward(x, W, dy)
    np.testing.assert_array_equal(dW, fastnn._core.matmul(x, dy, trans_a=True))
    np.testing.assert_array_equal(dx, fastnn._core.matmul(dy, W, trans_b=True))
    sparse_dW = cpp_backend.linear_backward(x, W, dy)[1]
    np.testing.assert_allclose(sparse_dW, dW, rtol=1e-5, atol=1e-5)
