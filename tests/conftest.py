"""Shared fixtures: run a test once per backend, a seeded RNG, and torch (optional)."""
import numpy as np
import pytest

import fastnn
from fastnn import backends

BACKENDS = ("numpy", "numba", "cpp")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Make `request.param` the active backend for one test, then restore the
    previous one. A backend that cannot load makes the test error (not skip):
    every backend is meant to be present."""
    previous = fastnn.backend()
    fastnn.set_backend(request.param)
    try:
        yield request.param
    finally:
        backends.set_active(previous)


@pytest.fixture
def rng():
    """A freshly seeded generator, so every test (and backend) sees the same data."""
    return np.random.default_rng(20240611)


@pytest.fixture
def torch():
    """The torch module, or skip the test when torch is not installed."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


# Activation kernels under test: name -> (extra arguments of forward and
# backward, whether backward takes the output 'y' or the input 'x').
ACTIVATION_CASES = {
    "sigmoid": ((), "y"),
    "tanh": ((), "y"),
    "relu": ((), "y"),
    "leaky_relu": ((), "x"),
    "leaky_relu-0.2": ((0.2,), "x"),
    "elu": ((), "x"),
    "elu-0.7": ((0.7,), "x"),
}
