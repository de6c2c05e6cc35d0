"""One checking layer: _core checks its arguments in C++, the numpy and numba
backends through backends.checks, with the same exceptions and messages; nn,
optim and train, which call the backend directly, get those checks on every
backend."""
import numpy as np
import pytest

import fastnn
from fastnn import backends, nn
from fastnn.backends import checks, cpp_backend

PYTHON_BACKENDS = ("numpy", "numba")


def _error(call):
    try:
        call()
    except (TypeError, ValueError, IndexError) as exc:
        return type(exc), str(exc)
    return None


def _bad_calls():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    W = rng.standard_normal((3, 2)).astype(np.float32)
    labels = np.array([0, 2, 1, 1])
    p = np.zeros((4, 3), np.float32)
    return {
        "strided x": ("softmax", (np.zeros((4, 6), np.float32)[:, ::2],), {}),
        "1-D x": ("log_softmax", (np.zeros(3),), {}),
        "float16 x": ("relu", (x.astype(np.float16),), {}),
        "misaligned x": ("sigmoid", (np.frombuffer(bytes(13), np.float32, 3, offset=1),), {}),
        "out of another dtype": ("tanh", (x,), {"out": np.zeros((4, 3))}),
        "out of another shape": ("relu", (x,), {"out": np.zeros((3, 4), np.float32)}),
        "read-only out": ("relu", (x,), {"out": np.zeros((4, 3), np.float32)[...].copy().view()}),
        "dy of another shape": ("relu_backward", (x, x[:2]), {}),
        "dy of another dtype": ("sigmoid_backward", (x, x.astype(np.float64)), {}),
        "matmul inner dimensions": ("matmul", (x, x), {}),
        "matmul out overlaps": ("matmul", (x, W), {"out": x[:, :2]}),
        "linear features": ("linear", (x, W.T.copy()), {}),
        "linear bias shape": ("linear", (x, W, np.zeros(3, np.float32)), {}),
        "linear activation": ("linear", (x, W, None, "softmax"), {}),
        "linear_backward without y": ("linear_backward", (x, W, np.zeros((4, 2), np.float32), None, "relu"), {}),
        "linear_backward x_activation": ("linear_backward", (x, W, np.zeros((4, 2), np.float32)),
                                         {"x_activation": "gelu"}),
        "label out of range": ("softmax_cross_entropy", (x, np.array([0, 3, 1, 1])), {}),
        "negative label": ("cross_entropy_error", (p + 0.25, np.array([0, -1, 1, 1])), {}),
        "labels of another dtype": ("softmax_cross_entropy", (x, labels.astype(np.int32)), {}),
        "labels of another length": ("softmax_cross_entropy", (x, labels[:3]), {}),
        "target of another shape": ("softmax_cross_entropy", (x, np.zeros((4, 2), np.float32)), {}),
        "empty batch": ("softmax_cross_entropy", (np.zeros((0, 3), np.float32), labels[:0]), {}),
        "gather index": ("gather_rows", (x, np.array([0, 4])), {}),
        "gather int32 index": ("gather_rows", (x, np.array([0, 1], np.int32)), {}),
        "prefetch index": ("prefetch_rows", (x, np.array([-1])), {}),
        "adam step 0": ("adam_step", (x.copy(), x, p.copy(), p.copy(), 0), {}),
        "sgd momentum without buffer": ("sgd_step", (x.copy(), x, None, 0.1, 0.9), {}),
        "rmsprop centered without grad_avg": ("rmsprop_step", (x.copy(), x, p.copy(), None, None),
                                              {"centered": True}),
        "state sharing memory": ("adagrad_step", (x.copy(), x, x, 1), {}),
    }


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("backend_name", PYTHON_BACKENDS)
@pytest.mark.parametrize("case", sorted(_bad_calls()))
def test_python_backends_refuse_like_core(backend_name, case):
    name, args, kwargs = _bad_calls()[case]
    if case == "read-only out":
        kwargs = {"out": _readonly(np.zeros((4, 3), np.float32))}
    expected = _error(lambda: getattr(cpp_backend, name)(*args, **kwargs))
    assert expected is not None, f"_core accepted {case}"
    got = _error(lambda: getattr(backends.load(backend_name), name)(*args, **kwargs))
    assert got == expected


@pytest.mark.parametrize("backend_name", PYTHON_BACKENDS)
def test_every_kernel_is_behind_its_check(backend_name):
    module = backends.load(backend_name)
    for name in checks.KERNELS:
        entry = getattr(module, name)
        assert entry.__wrapped__ is getattr(module.unchecked, name), name
    assert set(checks.KERNELS) <= {n for n in dir(cpp_backend) if not n.startswith("_")}


def test_layers_get_the_backends_checks(backend):
    """nn calls the backend's kernels directly: a bad call is refused the same
    way on every backend (here, a gradient of the wrong width)."""
    layer = nn.Linear(3, 2, seed=0)
    layer.forward(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy must have shape \(4, 2\), got \(4, 5\)"):
        layer.backward(np.ones((4, 5), np.float32))


def test_optimizer_kernels_get_the_backends_checks(backend):
    param = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="param and grad must have the same shape"):
        backends.active().adam_step(param, np.ones((3, 2), np.float32), np.zeros_like(param),
                                    np.zeros_like(param), 1)
    with pytest.raises(TypeError, match="grad must have the same dtype as param"):
        backends.active().sgd_step(param, np.ones((2, 3)), None, 0.1)


def test_no_backend_claims_to_check_differently():
    for name in backends.NAMES:
        assert not hasattr(backends.load(name), "CHECKS_ARGUMENTS")
    assert fastnn.backend() in backends.NAMES
