"""The public namespace (__all__, dir(fastnn)) and moving Linear weights
between fastnn's (in, out) layout and torch's (out, in)."""
import importlib

import numpy as np
import pytest

import fastnn
import fastnn.functional as F
from fastnn import nn

PUBLIC_MODULES = ("fastnn", "fastnn.functional", "fastnn.nn", "fastnn.optim", "fastnn.optim.lr_scheduler",
                  "fastnn.datasets", "fastnn.train", "fastnn.checkpoint", "fastnn.sklearn", "fastnn.gradient_check")


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_module_lists_its_names(name):
    module = importlib.import_module(name)
    assert module.__all__ and len(set(module.__all__)) == len(module.__all__)
    for public in module.__all__:
        assert getattr(module, public) is not None, f"{name}.{public}"


def test_dir_shows_what_a_user_may_use():
    names = dir(fastnn)
    for public in fastnn.__all__ + list(fastnn._LAZY):
        assert public in names
    for internal in ("os", "importlib", "warnings", "_os", "_core_or_none"):
        assert internal not in names
    for lazy in ("Trainer", "save", "load", "MLPClassifier"):
        assert lazy in names


def test_dir_follows_additions_to_the_lazy_table(monkeypatch):
    monkeypatch.setitem(fastnn._LAZY, "numerical_gradient_demo", ("fastnn.nn", "Linear"))
    assert "numerical_gradient_demo" in dir(fastnn)


def test_linear_documents_its_weight_layout():
    assert "(in_features, out_features)" in F.linear.__doc__
    assert "(out_features, in_features)" in F.linear.__doc__


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_torch_computes_what_torch_computes(torch, backend, bias, dtype):
    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    linear = torch.nn.Linear(7, 5, bias=bias, dtype=tdtype)
    x = torch.randn(4, 7, dtype=tdtype)
    layer = nn.Linear.from_torch(linear)
    assert layer.weight.data.shape == (7, 5) and layer.weight.data.dtype == np.dtype(dtype)
    assert (layer.bias is None) == (not bias)
    expected = linear(x).detach().numpy()
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(layer(x.numpy()), expected, rtol=tol, atol=tol)


def test_to_torch_computes_what_fastnn_computes(torch, backend, rng):
    layer = nn.Linear(6, 3, seed=4)
    layer.bias.data[...] = rng.standard_normal(3)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    linear = layer.to_torch()
    assert tuple(linear.weight.shape) == (3, 6)
    np.testing.assert_allclose(linear(torch.from_numpy(x)).detach().numpy(), layer(x), rtol=1e-5, atol=1e-6)
    # a copy: changing one leaves the other alone
    layer.weight.data[...] = 0
    assert float(linear.weight.detach().abs().sum()) > 0
    back = nn.Linear.from_torch(linear)
    assert not np.array_equal(back.weight.data, layer.weight.data)


def test_square_weights_are_transposed_not_reinterpreted(torch):
    linear = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.arange(9.0).reshape(3, 3))
    layer = nn.Linear.from_torch(linear)
    np.testing.assert_array_equal(layer.weight.data, np.arange(9.0).reshape(3, 3).T)
    np.testing.assert_array_equal(layer.to_torch().weight.detach().numpy(), np.arange(9.0).reshape(3, 3))


def test_from_torch_refuses_other_modules(torch):
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        nn.Linear.from_torch(torch.nn.ReLU())
