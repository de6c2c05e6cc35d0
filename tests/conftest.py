"""Shared fixtures: run a test once per backend, a seeded RNG, and torch
(optional); and, under CI, a session that refuses to start without every
optional test dependency."""
import importlib
import os

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


# Modules whose tests skip, naming the module, when it is missing (a local run
# without the extras) -> how to get it. Under CI every one must import.
OPTIONAL = {
    "torch": "the 'torch' extra: pip install 'fastnn[torch]'",
    "sklearn": "scikit-learn: pip install scikit-learn",
    "hypothesis": "the 'test' extra: pip install 'fastnn[test]'",
    "fastnn._core": "the C++ extension, built by pip install .",
}


def skip_reason(module):
    """The reason given when the tests of `module` skip."""
    return f"{module} is not installed ({OPTIONAL[module]})"


def need(module):
    """`module`, imported, or skip the test naming it; a module that is installed
    but fails to import for any other reason than ImportError makes the test error."""
    return pytest.importorskip(module, reason=skip_reason(module))


def running_in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_sessionstart(session):
    """Under CI, fail the run at once when an optional dependency is missing or
    broken, rather than let its tests skip and the suite shrink unseen."""
    if not running_in_ci():
        return
    problems = []
    for module, source in OPTIONAL.items():
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - a broken install can raise anything; each is reported
            problems.append(f"{module} ({source}): {type(exc).__name__}: {exc}")
    if problems:
        raise pytest.UsageError("CI is set, so every optional test dependency must import, but:\n  "
                                + "\n  ".join(problems))


@pytest.fixture
def torch():
    """The torch module, or skip the test when torch is not installed."""
    torch = need("torch")
    torch.set_num_threads(1)
    return torch


def _activation_cases():
    """Every elementwise activation of the backends' list, at its defaults and, where it
    has a parameter, at another value: name -> (extra arguments of forward and backward,
    whether backward takes the output 'y' or the input 'x')."""
    from fastnn.backends.checks import ELEMENTWISE_ACTIVATIONS
    cases = {}
    for name, (saved, parameter) in ELEMENTWISE_ACTIVATIONS.items():
        cases[name] = ((), saved)
        if parameter:
            other = round(0.5 * parameter[1] + 0.3, 3)
            cases[f"{name}-{other:g}"] = ((other,), saved)
    return cases


ACTIVATION_CASES = _activation_cases()


def sparse_matrix(rng, shape, density, dtype=np.float32, signed=False):
    """A mostly-zero matrix: values in [0, 1) (standard normal with signed), each kept with probability density."""
    x = (rng.standard_normal(shape) if signed else rng.random(shape)).astype(dtype)
    x[rng.random(shape) >= density] = 0
    return x


SPARSE_BLOCK_LINES = 4  # lines per block of fastnn's block-sparse form (kSparseBlockLines)


def block_form(lines, listed):
    """(count, index, values) of a block-sparse form from its definition:
    `lines` (lines, positions) grouped by 4 (the last block padded with
    zeros), a position listed where listed(value) holds for any line of the
    group, the group's values there."""
    count, index, values = [], [], []
    for b in range(0, lines.shape[0], SPARSE_BLOCK_LINES):
        group = np.zeros((SPARSE_BLOCK_LINES, lines.shape[1]), lines.dtype)
        group[:min(SPARSE_BLOCK_LINES, lines.shape[0] - b)] = lines[b:b + SPARSE_BLOCK_LINES]
        keep = np.flatnonzero(listed(group).any(axis=0))
        count.append(keep.size)
        index.extend(keep)
        values.extend(group[:, keep].T)
    return (np.array(count), np.array(index, np.int32),
            np.array(values, lines.dtype).reshape(-1, SPARSE_BLOCK_LINES))
