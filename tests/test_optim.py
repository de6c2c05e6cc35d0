"""fastnn.optim: update rules against torch.optim (same gradients in, same
parameter trajectory out), backends against the NumPy reference, hand-computed
first steps, state_dict round trips (bit-identical resume), argument checks,
zero_grad and grad=None semantics, one kernel call per parameter, no per-step
allocation."""
import functools
import tracemalloc
import types

import numpy as np
import pytest

import fastnn
from fastnn import backends, optim

from conftest import need

N_STEPS = 20
SHAPES = [(4, 3), (7,), (2, 3, 2)]
# Steps (0-based) on which parameter 1 has no gradient: it must be skipped, and
# its own step count (Adam's bias correction, Adagrad's lr decay) must lag.
NO_GRAD = {1: (3, 4, 11)}


@pytest.fixture(autouse=True)
def _restore_backend():
    """Tests that pick a backend themselves leave the previous one active afterwards."""
    previous = fastnn.backend()
    yield
    backends.set_active(previous)


class Param:
    """The minimal parameter object: .data (updated in place) and .grad."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = None


# (optimizer name, kwargs): every option of every optimizer, alone and combined.
CONFIGS = [
    ("SGD", {}),
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.1, "maximize": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "dampening": 0.1, "weight_decay": 0.05, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.05, "lr_decay": 0.05, "initial_accumulator_value": 0.3}),
    ("Adagrad", {"lr": 0.05, "weight_decay": 0.1, "maximize": True, "eps": 1e-6}),
    ("RMSprop", {}),
    ("RMSprop", {"centered": True}),
    ("RMSprop", {"lr": 0.005, "momentum": 0.9}),
    ("RMSprop", {"lr": 0.005, "centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.02, "alpha": 0.9, "eps": 1e-6, "maximize": True}),
    ("Adam", {}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "maximize": True}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "maximize": True, "betas": (0.5, 0.9)}),
]
CONFIG_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for name, kw in CONFIGS]
DTYPES = [np.float64, np.float32]


def _problem(dtype, seed=7):
    """Initial parameters and N_STEPS gradients per parameter (None where NO_GRAD says)."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = []
    for t in range(N_STEPS):
        step = []
        for i, s in enumerate(SHAPES):
            g = rng.standard_normal(s).astype(dtype)
            step.append(None if t in NO_GRAD.get(i, ()) else g)
        grads.append(step)
    return init, grads


def _run(name, kwargs, dtype, steps=N_STEPS, seed=7):
    """fastnn's parameter trajectory: list over steps of lists of arrays."""
    init, grads = _problem(dtype, seed)
    params = [Param(a.copy()) for a in init]
    datas = [p.data for p in params]
    opt = getattr(optim, name)(params, **kwargs)
    out = []
    for t in range(steps):
        for p, g in zip(params, grads[t]):
            p.grad = None if g is None else g.copy()
        opt.step()
        out.append([p.data.copy() for p in params])
    assert all(p.data is d for p, d in zip(params, datas)), "param.data was rebound"
    return out


@functools.lru_cache(maxsize=None)
def _torch_run(name, kwargs_items, dtype_name):
    import torch

    dtype = np.dtype(dtype_name).type
    init, grads = _problem(dtype)
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(torch.optim, name)(tparams, foreach=False, **dict(kwargs_items))
    out = []
    for t in range(N_STEPS):
        for p, g in zip(tparams, grads[t]):
            p.grad = None if g is None else torch.tensor(g.copy())
        opt.step()
        out.append([p.detach().numpy().copy() for p in tparams])
    return out


def _assert_trajectories_close(ours, ref, dtype, what):
    # float64: 1e-12 relative, with an absolute floor of 1e-14 x the tensor's scale
    # (an element crossing zero has no meaningful relative error). float32: ulp-level
    # differences in the order of operations, compounded over 20 steps.
    rtol, floor = (1e-12, 1e-14) if dtype == np.float64 else (5e-6, 5e-7)
    for t, (a_step, r_step) in enumerate(zip(ours, ref)):
        for i, (a, r) in enumerate(zip(a_step, r_step)):
            assert a.dtype == r.dtype
            np.testing.assert_allclose(a, r, rtol=rtol, atol=floor * max(1.0, np.abs(r).max(initial=0.0)),
                                       err_msg=f"{what}: step {t + 1}, param {i}")


# ------------------------------------------------------------------ against torch

@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_trajectory_matches_torch(backend, torch, name, kwargs, dtype):
    ref = _torch_run(name, tuple(sorted(kwargs.items())), np.dtype(dtype).name)
    ours = _run(name, kwargs, dtype)
    _assert_trajectories_close(ours, ref, dtype, f"{name}{kwargs} on {backend}")


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("Adam", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
])
def test_param_groups_match_torch(backend, torch, name, kwargs):
    """Two groups with their own hyperparameters; lr changed between steps as a scheduler would."""
    init, grads = _problem(np.float64)
    params = [Param(a.copy()) for a in init]
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in init]

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.003, "weight_decay": 0.2}]

    opt = getattr(optim, name)(groups(params), **kwargs)
    topt = getattr(torch.optim, name)(groups(tparams), foreach=False, **kwargs)
    assert len(opt.param_groups) == len(topt.param_groups) == 2
    for ours, theirs in zip(opt.param_groups, topt.param_groups):
        for key, value in ours.items():
            if key != "params":
                assert theirs[key] == value, key
    for t in range(N_STEPS):
        for p, tp, g in zip(params, tparams, grads[t]):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g)
        opt.step()
        topt.step()
        for group, tgroup in zip(opt.param_groups, topt.param_groups):
            group["lr"] *= 0.9
            tgroup["lr"] *= 0.9
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True}),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.1}),
])
def test_state_dict_layout_matches_torch_and_loads_torch_state(torch, name, kwargs):
    """Same keys and numbers as torch's state_dict; a torch state_dict (tensors made
    numpy) loads and the run continues exactly as torch's does."""
    fastnn.set_backend("numpy")
    init, grads = _problem(np.float64)
    params = [Param(a.copy()) for a in init]
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt = getattr(optim, name)(params, **kwargs)
    topt = getattr(torch.optim, name)(tparams, foreach=False, **kwargs)

    def step(t):
        for p, tp, g in zip(params, tparams, grads[t]):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g)
        opt.step()
        topt.step()

    for t in range(6):
        step(t)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sorted(sd["state"]) == sorted(tsd["state"])
    for idx, tstate in tsd["state"].items():
        assert set(sd["state"][idx]) == set(tstate), idx
        for key, tvalue in tstate.items():
            np.testing.assert_allclose(np.asarray(sd["state"][idx][key]), tvalue.numpy(), rtol=1e-12, atol=1e-15)
    for group, tgroup in zip(sd["param_groups"], tsd["param_groups"]):
        assert group["params"] == tgroup["params"]
        assert all(tgroup[k] == v for k, v in group.items()), (group, tgroup)

    # torch -> fastnn: a fresh optimizer over copies of torch's current parameters.
    as_numpy = {"state": {k: {n: v.numpy().copy() for n, v in s.items()} for k, s in tsd["state"].items()},
                "param_groups": tsd["param_groups"]}
    params2 = [Param(tp.detach().numpy().copy()) for tp in tparams]
    opt2 = getattr(optim, name)(params2, **kwargs)
    opt2.load_state_dict(as_numpy)
    for t in range(6, N_STEPS):
        for p, tp, g in zip(params2, tparams, grads[t]):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g)
        opt2.step()
        topt.step()
    for p, tp in zip(params2, tparams):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_defaults_match_torch(torch, name):
    import inspect

    ours = inspect.signature(getattr(optim, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    for arg, param in ours.items():
        assert arg in theirs, arg
        assert param.default == theirs[arg].default, (arg, param.default, theirs[arg].default)
    # positional order of torch's positional arguments is kept
    positional = [a for a, p in theirs.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    ours_positional = [a for a, p in ours.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert ours_positional == positional[:len(ours_positional)]


# ---------------------------------------------------------- without torch

@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("other", ["numba", "cpp"])
def test_backends_match_numpy_reference(other, name, kwargs, dtype):
    previous = fastnn.backend()
    try:
        fastnn.set_backend("numpy")
        ref = _run(name, kwargs, dtype)
        fastnn.set_backend(other)
        ours = _run(name, kwargs, dtype)
    finally:
        backends.set_active(previous)
    _assert_trajectories_close(ours, ref, dtype, f"{name}{kwargs}: {other} vs numpy")


EDGE_CONFIGS = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "maximize": True}),
    ("Adagrad", {"lr_decay": 0.1, "weight_decay": 0.1, "initial_accumulator_value": 0.2}),
    ("RMSprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    ("Adam", {"weight_decay": 0.1}),
    ("AdamW", {"maximize": True, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name,kwargs", EDGE_CONFIGS, ids=[c[0] + str(i) for i, c in enumerate(EDGE_CONFIGS)])
@pytest.mark.parametrize("other", ["numba", "cpp"])
def test_backends_agree_on_edge_shapes_and_parallel_sizes(other, name, kwargs, dtype):
    """0-d, empty and 1-element parameters, and ones large enough for the kernels'
    multi-threaded paths (> 2 x 65536 elements)."""
    shapes = [(), (0,), (1,), (300, 700), (65537,)]

    def run(backend_name):
        fastnn.set_backend(backend_name)
        rng = np.random.default_rng(1)
        params = [Param(rng.standard_normal(s).astype(dtype)) for s in shapes]
        opt = getattr(optim, name)(params, **kwargs)
        for _ in range(3):
            for p in params:
                p.grad = rng.standard_normal(p.data.shape).astype(dtype)
            opt.step()
        return [[p.data for p in params]]

    _assert_trajectories_close(run(other), run("numpy"), dtype, f"{name}{kwargs}: {other} vs numpy")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_first_step_by_hand(backend, dtype):
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal((5, 3))
    g = rng.standard_normal((5, 3))
    rtol, atol = (1e-13, 1e-15) if dtype == np.float64 else (1e-6, 1e-6)

    def first_step(cls, **kwargs):
        p = Param(p0.astype(dtype))
        p.grad = g.astype(dtype)
        cls([p], **kwargs).step()
        return p.data

    lr, wd = 0.1, 0.01
    np.testing.assert_allclose(first_step(optim.SGD, lr=lr), p0 - lr * g, rtol=rtol, atol=atol)
    # first momentum step: the buffer is the gradient itself (no dampening applied)
    np.testing.assert_allclose(first_step(optim.SGD, lr=lr, momentum=0.9, dampening=0.5, weight_decay=wd),
                               p0 - lr * (g + wd * p0), rtol=rtol, atol=atol)
    np.testing.assert_allclose(first_step(optim.SGD, lr=lr, momentum=0.9, nesterov=True),
                               p0 - lr * (g + 0.9 * g), rtol=rtol, atol=atol)
    np.testing.assert_allclose(first_step(optim.SGD, lr=lr, maximize=True), p0 + lr * g, rtol=rtol, atol=atol)
    # Adam's first step: m_hat = g, v_hat = g^2 -> p - lr * g / (|g| + eps)
    b1, b2, eps = 0.9, 0.999, 1e-8
    m, v = (1 - b1) * g, (1 - b2) * g * g
    expected = p0 - lr / (1 - b1) * m / (np.sqrt(v) / np.sqrt(1 - b2) + eps)
    np.testing.assert_allclose(first_step(optim.Adam, lr=lr), expected, rtol=rtol, atol=atol)
    np.testing.assert_allclose(expected, p0 - lr * np.sign(g), rtol=1e-6, atol=1e-6)
    # AdamW: decay first, then the same Adam step
    np.testing.assert_allclose(first_step(optim.AdamW, lr=lr, weight_decay=0.5),
                               p0 * (1 - lr * 0.5) - lr / (1 - b1) * m / (np.sqrt(v) / np.sqrt(1 - b2) + eps),
                               rtol=rtol, atol=atol)
    # Adagrad's first step: sum = acc + g^2
    np.testing.assert_allclose(first_step(optim.Adagrad, lr=lr, initial_accumulator_value=0.5),
                               p0 - lr * g / (np.sqrt(0.5 + g * g) + 1e-10), rtol=rtol, atol=atol)
    # RMSprop's first step: square_avg = (1 - alpha) g^2
    np.testing.assert_allclose(first_step(optim.RMSprop, lr=lr),
                               p0 - lr * g / (np.sqrt(0.01 * g * g) + 1e-8), rtol=rtol, atol=atol)


def _is_plain(value):
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, (dict,)):
        return all(isinstance(k, (int, str)) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return type(value) in (int, float, bool, str)


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_state_dict_resume_is_bit_identical(backend, name, kwargs):
    """10 steps == 5 steps, state_dict -> new optimizer -> load_state_dict, 5 steps."""
    steps = 10
    straight = _run(name, kwargs, np.float64, steps=steps)
    init, grads = _problem(np.float64)

    def feed(params, t):
        for p, g in zip(params, grads[t]):
            p.grad = None if g is None else g.copy()

    params = [Param(a.copy()) for a in init]
    opt = getattr(optim, name)(params, **kwargs)
    for t in range(5):
        feed(params, t)
        opt.step()
    sd = opt.state_dict()
    assert _is_plain(sd), sd
    # the state dict is a snapshot: stepping on does not change it
    snapshot = {k: {n: np.copy(v) for n, v in s.items()} for k, s in sd["state"].items()}
    feed(params, 5)
    opt.step()
    for k, s in snapshot.items():
        for n, v in s.items():
            assert np.array_equal(sd["state"][k][n], v)

    resumed = [Param(a.copy()) for a in straight[4]]
    opt2 = getattr(optim, name)(resumed, **kwargs)
    opt2.load_state_dict(sd)
    for t in range(5, steps):
        feed(resumed, t)
        opt2.step()
        for a, b in zip(resumed, straight[t]):
            assert np.array_equal(a.data, b), f"step {t + 1} differs after resume"
    # loading copied the arrays: the state dict is not aliased by the optimizer
    for s in opt2.state.values():
        for v in s.values():
            if isinstance(v, np.ndarray):
                assert not any(v is w for st in sd["state"].values() for w in st.values())


def test_load_state_dict_copies_into_existing_arrays_and_casts():
    fastnn.set_backend("numpy")
    init, grads = _problem(np.float32)
    params = [Param(a.copy()) for a in init]
    opt = optim.Adam(params, lr=0.01)
    for p, g in zip(params, grads[0]):
        p.grad = g
    opt.step()
    before = {id(p): (opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]) for p in params if p in opt.state}
    sd = opt.state_dict()
    # a float64 state (e.g. from a float64 run) is cast to the parameter's dtype
    sd64 = {"state": {k: {n: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for n, v in s.items()}
                      for k, s in sd["state"].items()},
            "param_groups": sd["param_groups"]}
    sd64["param_groups"][0]["lr"] = 0.5
    opt.load_state_dict(sd64)
    assert opt.param_groups[0]["lr"] == 0.5
    assert opt.param_groups[0]["params"] == params
    for p in params:
        if id(p) in before:
            assert opt.state[p]["exp_avg"] is before[id(p)][0]
            assert opt.state[p]["exp_avg_sq"] is before[id(p)][1]
            assert opt.state[p]["exp_avg"].dtype == np.float32
    assert all(isinstance(opt.state[p]["step"], int) for p in params if p in opt.state)


def test_load_state_dict_rejects_mismatches_without_changing_anything():
    fastnn.set_backend("numpy")
    init, grads = _problem(np.float64)
    params = [Param(a.copy()) for a in init]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    for p, g in zip(params, grads[0]):
        p.grad = g
    opt.step()
    sd = opt.state_dict()
    good = opt.state_dict()

    other = optim.SGD([Param(a.copy()) for a in init[:2]], lr=0.1)
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        other.load_state_dict(sd)
    two_groups = optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        two_groups.load_state_dict(sd)

    bad = opt.state_dict()
    bad["state"][0]["momentum_buffer"] = np.zeros((9, 9))
    bad["param_groups"][0]["lr"] = 123.0
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    assert opt.param_groups[0]["lr"] == 0.1
    np.testing.assert_array_equal(opt.state[params[0]]["momentum_buffer"], good["state"][0]["momentum_buffer"])

    bad = opt.state_dict()
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid learning rate: -1.0"):
        opt.load_state_dict(bad)
    assert opt.param_groups[0]["lr"] == 0.1

    bad = opt.state_dict()
    bad["state"][7] = {"momentum_buffer": np.zeros(3)}
    with pytest.raises(ValueError, match="parameter 7"):
        opt.load_state_dict(bad)


def test_load_state_dict_before_any_step_restarts_momentum():
    """A state dict saved before the first step has no momentum buffers: the next
    step is a first step again (buffer = gradient), as in torch."""
    fastnn.set_backend("numpy")
    p = Param(np.ones(3))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    empty = opt.state_dict()
    assert empty["state"] == {}
    p.grad = np.ones(3)
    opt.step()
    opt.step()
    opt.load_state_dict(empty)
    assert not opt.state.get(p)
    p.data[...] = 1.0
    opt.step()
    np.testing.assert_allclose(p.data, 0.9)


# ---------------------------------------------------------------- semantics

@pytest.mark.parametrize("cls,kwargs,error,message", [
    (optim.SGD, {"lr": -1}, ValueError, "Invalid learning rate: -1"),
    (optim.SGD, {"momentum": -0.5}, ValueError, "Invalid momentum value: -0.5"),
    (optim.SGD, {"weight_decay": -1e-4}, ValueError, "Invalid weight_decay value: -0.0001"),
    (optim.SGD, {"nesterov": True}, ValueError, "Nesterov momentum requires a momentum and zero dampening"),
    (optim.SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (optim.Adagrad, {"lr": -0.1}, ValueError, "Invalid learning rate: -0.1"),
    (optim.Adagrad, {"lr_decay": -1}, ValueError, "Invalid lr_decay value: -1"),
    (optim.Adagrad, {"weight_decay": -1}, ValueError, "Invalid weight_decay value: -1"),
    (optim.Adagrad, {"initial_accumulator_value": -1}, ValueError, "Invalid initial_accumulator_value value: -1"),
    (optim.Adagrad, {"eps": -1}, ValueError, "Invalid epsilon value: -1"),
    (optim.RMSprop, {"lr": -1}, ValueError, "Invalid learning rate: -1"),
    (optim.RMSprop, {"eps": -1}, ValueError, "Invalid epsilon value: -1"),
    (optim.RMSprop, {"momentum": -1}, ValueError, "Invalid momentum value: -1"),
    (optim.RMSprop, {"weight_decay": -1}, ValueError, "Invalid weight_decay value: -1"),
    (optim.RMSprop, {"alpha": -1}, ValueError, "Invalid alpha value: -1"),
    (optim.Adam, {"lr": -1}, ValueError, "Invalid learning rate: -1"),
    (optim.Adam, {"eps": -1}, ValueError, "Invalid epsilon value: -1"),
    (optim.Adam, {"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    (optim.Adam, {"betas": (0.9, -0.1)}, ValueError, "Invalid beta parameter at index 1: -0.1"),
    (optim.Adam, {"weight_decay": -1}, ValueError, "Invalid weight_decay value: -1"),
    (optim.AdamW, {"lr": -1}, ValueError, "Invalid learning rate: -1"),
    (optim.AdamW, {"betas": (0.9, 1.5)}, ValueError, "Invalid beta parameter at index 1: 1.5"),
])
def test_argument_validation(cls, kwargs, error, message):
    with pytest.raises(error) as info:
        cls([Param(np.zeros(2))], **kwargs)
    assert str(info.value) == message
    torch = need("torch")  # after fastnn's own check, which runs without torch too
    with pytest.raises(error) as tinfo:    # the message is torch's own
        getattr(torch.optim, cls.__name__)([torch.zeros(2, requires_grad=True)], **kwargs)
    assert str(tinfo.value) == message


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
def test_amsgrad_is_refused(cls):
    with pytest.raises(NotImplementedError, match="amsgrad"):
        cls([Param(np.zeros(2))], amsgrad=True)
    with pytest.raises(NotImplementedError, match="amsgrad"):
        cls([{"params": [Param(np.zeros(2))], "amsgrad": True}])


def test_params_validation():
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([])
    with pytest.raises(TypeError, match="iterable of parameters"):
        optim.SGD(Param(np.zeros(2)))
    with pytest.raises(TypeError, match="iterable of parameters"):
        optim.SGD(np.zeros(3))
    with pytest.raises(TypeError, match="can only optimize"):
        optim.SGD([np.zeros(3)])          # an ndarray's .data is a memoryview, not an array
    with pytest.raises(TypeError, match="float32 or float64"):
        optim.SGD([Param(np.zeros(3, dtype=np.int64))])
    with pytest.raises(ValueError, match="C-contiguous"):
        optim.SGD([Param(np.zeros((3, 4))[:, ::2])])
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD({Param(np.zeros(2))})
    p = Param(np.zeros(2))
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}])
    with pytest.warns(UserWarning, match="duplicate parameters"):
        optim.SGD([p, p])


def test_bad_gradients_are_reported_and_noncontiguous_ones_work():
    fastnn.set_backend("numpy")
    p = Param(np.ones((2, 3)))
    opt = optim.SGD([p], lr=0.5)
    p.grad = np.ones(3)                       # would broadcast silently in NumPy
    with pytest.raises(ValueError, match="shape"):
        opt.step()
    p.grad = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="dtype"):
        opt.step()
    np.testing.assert_array_equal(p.data, 1.0)
    p.grad = np.ones((3, 2)).T                # F-ordered: copied to C order, not rejected
    opt.step()
    np.testing.assert_array_equal(p.data, 0.5)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_zero_grad(name):
    params = [Param(np.ones(3)), Param(np.ones(2)), Param(np.ones(2))]
    grads = [np.full(3, 2.0), np.full(2, 3.0)]
    opt = getattr(optim, name)(params)
    params[0].grad, params[1].grad = grads
    opt.zero_grad(set_to_none=False)
    assert params[0].grad is grads[0] and params[1].grad is grads[1]      # filled in place
    assert not grads[0].any() and not grads[1].any()
    assert params[2].grad is None
    opt.zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("name,kwargs", [("SGD", {"momentum": 0.9}), ("Adagrad", {}), ("RMSprop", {"momentum": 0.5}),
                                         ("Adam", {}), ("AdamW", {})])
def test_param_without_grad_is_skipped(backend, name, kwargs):
    a, b = Param(np.ones(4)), Param(np.ones(4))
    opt = getattr(optim, name)([a, b], lr=0.1, **kwargs)
    a.grad = np.full(4, 0.5)
    for _ in range(3):
        opt.step()
    np.testing.assert_array_equal(b.data, 1.0)
    assert (a.data < 1.0).all()
    if name == "Adagrad":   # torch creates Adagrad's state with the optimizer; its step stays 0
        assert opt.state[b]["step"] == 0 and not opt.state[b]["sum"].any()
    else:
        assert not opt.state.get(b)
    if "step" in opt.state[a]:
        assert opt.state[a]["step"] == 3


@pytest.mark.parametrize("name,kwargs,kernel", [
    ("SGD", {"momentum": 0.9}, "sgd_step"), ("SGD", {}, "sgd_step"), ("Adagrad", {}, "adagrad_step"),
    ("RMSprop", {"centered": True, "momentum": 0.5}, "rmsprop_step"), ("Adam", {}, "adam_step"),
    ("AdamW", {}, "adam_step"),
])
def test_one_kernel_call_per_parameter(monkeypatch, name, kwargs, kernel):
    reference = backends.load("numpy")
    calls = []

    def spy(*args):
        calls.append(args)
        return getattr(reference, kernel)(*args)

    fake = types.SimpleNamespace(NAME="spy", **{kernel: spy})
    monkeypatch.setattr(backends, "_active", fake)
    params = [Param(np.ones((2, 2))), Param(np.ones(3)), Param(np.ones(5))]
    opt = getattr(optim, name)(params, **kwargs)
    params[0].grad, params[2].grad = np.ones((2, 2)), np.ones(5)
    opt.step()
    opt.step()
    assert len(calls) == 4
    assert [c[0] is p.data for c, p in zip(calls, [params[0], params[2]] * 2)] == [True] * 4
    if name == "AdamW":
        assert calls[0][10] is True      # decoupled_weight_decay
    if name == "Adam":
        assert calls[0][10] is False
        assert [c[4] for c in calls] == [1, 1, 2, 2]    # the step count
    if name == "SGD" and kwargs:
        assert [c[-1] for c in calls] == [True, True, False, False]   # first_step


@pytest.mark.parametrize("name,kwargs", [("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
                                         ("Adagrad", {"weight_decay": 0.1}),
                                         ("RMSprop", {"momentum": 0.9, "centered": True}), ("Adam", {}),
                                         ("AdamW", {})])
def test_steady_state_step_allocates_nothing(name, kwargs):
    """On the C++ backend a step after the first allocates no array: state arrays are
    made once and updated in place, as are the parameters."""
    previous = fastnn.backend()
    fastnn.set_backend("cpp")
    try:
        params = [Param(np.ones(100_000, dtype=np.float32)), Param(np.ones((300, 100)))]
        for p in params:
            p.grad = np.full_like(p.data, 0.01)
        opt = getattr(optim, name)(params, **kwargs)
        opt.step()
        state_ids = {id(v) for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray)}
        tracemalloc.start()
        try:
            opt.step()
            opt.step()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 20_000, f"{peak} bytes allocated by two steps"
        assert state_ids == {id(v) for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray)}
    finally:
        backends.set_active(previous)


def test_closure_and_hyperparameters_read_every_step():
    fastnn.set_backend("numpy")
    p = Param(np.zeros(2))
    p.grad = np.ones(2)
    opt = optim.SGD([p], lr=0.1)
    assert opt.step(lambda: 3.5) == 3.5
    opt.param_groups[0]["lr"] = 1.0          # what a scheduler does
    opt.step()
    np.testing.assert_allclose(p.data, -1.1)
    opt.param_groups[0]["momentum"] = 0.5   # momentum switched on later: a first momentum step
    opt.step()
    np.testing.assert_allclose(p.data, -2.1)
    opt.step()
    np.testing.assert_allclose(p.data, -3.6)


def test_add_param_group_and_named_params():
    fastnn.set_backend("numpy")
    a, b = Param(np.ones(2)), Param(np.ones(2))
    opt = optim.Adagrad([a], lr=0.1, initial_accumulator_value=0.5)
    opt.add_param_group({"params": b, "lr": 0.2})
    assert opt.param_groups[1]["lr"] == 0.2 and opt.param_groups[1]["eps"] == 1e-10
    np.testing.assert_array_equal(opt.state[b]["sum"], 0.5)
    b.grad = np.ones(2)
    opt.step()
    np.testing.assert_allclose(b.data, 1 - 0.2 / (np.sqrt(1.5) + 1e-10))
    named = optim.SGD([("w", a), ("b", b)], lr=0.1)
    assert named.param_groups[0]["param_names"] == ["w", "b"]
    assert named.state_dict()["param_groups"][0]["param_names"] == ["w", "b"]
    assert "Parameter Group 0" in repr(named)


def test_lr_scheduler_is_a_submodule():
    import fastnn.optim.lr_scheduler as lr_scheduler

    assert optim.lr_scheduler is lr_scheduler
    assert fastnn.optim.lr_scheduler.StepLR is lr_scheduler.StepLR
