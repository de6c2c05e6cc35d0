"""fastnn.optim.lr_scheduler against torch.optim.lr_scheduler: lr (and for
OneCycleLR momentum / beta1) trajectories over several periods, metric-driven
ReduceLROnPlateau, get_last_lr, state_dict round trips, OneCycleLR's
over-stepping error; and an optimizer driven by a scheduler against torch."""
import math
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import backends, optim
from fastnn.optim import lr_scheduler


class Param:
    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = None


@pytest.fixture(autouse=True)
def _restore_backend():
    previous = fastnn.backend()
    yield
    backends.set_active(previous)


def _close(a, b, rel=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-300)


def _groups(params, lrs):
    return [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]


def _make(lib, opt_name, opt_kwargs, lrs):
    """An optimizer of `lib` (fastnn.optim or torch.optim) with one group per lr."""
    if lib is optim:
        params = [Param(np.zeros(2)) for _ in lrs]
    else:
        import torch
        params = [torch.zeros(2, requires_grad=True) for _ in lrs]
    return getattr(lib, opt_name)(_groups(params, lrs), **opt_kwargs)


def _hyper(group):
    """The values a scheduler may drive: lr, and momentum or beta1."""
    out = [group["lr"]]
    if "momentum" in group:
        out.append(group["momentum"])
    if "betas" in group:
        out.append(group["betas"][0])
    return out


def _trajectory(lib, sched_lib, opt_name, opt_kwargs, lrs, sched_name, sched_kwargs, steps, metrics=None):
    opt = _make(lib, opt_name, opt_kwargs, lrs)
    sched = getattr(sched_lib, sched_name)(opt, **sched_kwargs)
    rows = [[_hyper(g) for g in opt.param_groups] + [list(sched.get_last_lr())]]
    for t in range(steps):
        opt.step()          # no gradients: nothing moves, but the order is torch's
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[t])
        rows.append([_hyper(g) for g in opt.param_groups] + [list(sched.get_last_lr())])
    return rows


def _assert_rows_close(ours, theirs):
    assert len(ours) == len(theirs)
    for t, (a, b) in enumerate(zip(ours, theirs)):
        flat_a = [x for part in a for x in part]
        flat_b = [float(x) for part in b for x in part]
        assert len(flat_a) == len(flat_b), (t, a, b)
        for x, y in zip(flat_a, flat_b):
            assert _close(x, y), f"step {t}: {a} != {b}"


# (optimizer, its kwargs, initial lrs per group, scheduler, its kwargs, steps)
SCHEDULES = [
    ("SGD", {"momentum": 0.9}, [0.1, 0.02], "StepLR", {"step_size": 3}, 12),
    ("Adam", {}, [0.01], "StepLR", {"step_size": 4, "gamma": 0.5}, 14),
    ("SGD", {}, [0.1, 0.05], "CosineAnnealingLR", {"T_max": 7}, 3 * 7 + 4),
    ("Adam", {}, [0.01], "CosineAnnealingLR", {"T_max": 5, "eta_min": 0.001}, 3 * 5 + 7),
    ("SGD", {}, [0.3], "CosineAnnealingLR", {"T_max": 1, "eta_min": 0.01}, 6),
    ("SGD", {"momentum": 0.9}, [0.1], "OneCycleLR", {"max_lr": 0.5, "total_steps": 30}, 30),
    ("SGD", {"momentum": 0.9}, [0.1, 0.1], "OneCycleLR",
     {"max_lr": [0.5, 0.2], "epochs": 4, "steps_per_epoch": 7, "anneal_strategy": "linear",
      "base_momentum": [0.8, 0.7], "max_momentum": 0.99}, 28),
    ("Adam", {}, [0.01], "OneCycleLR", {"max_lr": 0.01, "total_steps": 25, "three_phase": True,
                                        "pct_start": 0.25}, 25),
    ("AdamW", {}, [0.01], "OneCycleLR", {"max_lr": 0.02, "total_steps": 10, "div_factor": 10.0,
                                         "final_div_factor": 100.0, "pct_start": 0.5}, 10),
    ("RMSprop", {}, [0.01], "OneCycleLR", {"max_lr": 0.05, "total_steps": 12}, 12),
    ("Adagrad", {}, [0.01], "OneCycleLR", {"max_lr": 0.05, "total_steps": 12, "cycle_momentum": False}, 12),
    ("SGD", {"momentum": 0.9}, [0.1], "OneCycleLR", {"max_lr": 0.3, "total_steps": 3}, 3),
]
SCHEDULE_IDS = [f"{s[3]}-{s[0]}-{i}" for i, s in enumerate(SCHEDULES)]


@pytest.mark.parametrize("opt_name,opt_kwargs,lrs,sched_name,sched_kwargs,steps", SCHEDULES, ids=SCHEDULE_IDS)
def test_schedule_matches_torch(torch, opt_name, opt_kwargs, lrs, sched_name, sched_kwargs, steps):
    ours = _trajectory(optim, lr_scheduler, opt_name, opt_kwargs, lrs, sched_name, sched_kwargs, steps)
    theirs = _trajectory(torch.optim, torch.optim.lr_scheduler, opt_name, opt_kwargs, lrs, sched_name,
                         sched_kwargs, steps)
    _assert_rows_close(ours, theirs)


PLATEAU_METRICS = [1.0, 0.9, 0.95, 0.91, 0.9, 0.92, 0.89999, 0.5, 0.6, 0.6, 0.6, 0.6, 0.4, 0.41, 0.42,
                   0.43, 0.44, 0.45, 0.46, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
PLATEAUS = [
    {},
    {"patience": 1},
    {"patience": 0, "factor": 0.5},
    {"mode": "max", "patience": 1, "threshold": 0.01},
    {"mode": "min", "threshold_mode": "abs", "threshold": 0.05, "patience": 1, "cooldown": 2},
    {"mode": "max", "threshold_mode": "abs", "patience": 2, "cooldown": 1, "factor": 0.3},
    {"patience": 0, "min_lr": [0.02, 0.0], "factor": 0.5},
    {"patience": 0, "min_lr": 0.0, "factor": 0.9, "eps": 0.005},
]


@pytest.mark.parametrize("kwargs", PLATEAUS, ids=[str(k) for k in PLATEAUS])
def test_reduce_on_plateau_matches_torch(torch, kwargs):
    metrics = PLATEAU_METRICS * 2
    ours = _trajectory(optim, lr_scheduler, "SGD", {"momentum": 0.9}, [0.1, 0.05], "ReduceLROnPlateau", kwargs,
                       len(metrics), metrics)
    theirs = _trajectory(torch.optim, torch.optim.lr_scheduler, "SGD", {"momentum": 0.9}, [0.1, 0.05],
                         "ReduceLROnPlateau", kwargs, len(metrics), metrics)
    _assert_rows_close(ours, theirs)
    assert ours[-1] != ours[0]        # the script does reduce the lr


def test_reduce_on_plateau_by_hand():
    opt = optim.SGD([Param(np.zeros(1))], lr=1.0)
    sched = lr_scheduler.ReduceLROnPlateau(opt, patience=2, factor=0.5, cooldown=1, min_lr=0.2)
    lrs = []
    for m in [5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5]:
        sched.step(m)
        lrs.append(sched.get_last_lr()[0])
    # bad epochs 1, 2, 3 -> reduce; one cooldown epoch; 3 more bad -> reduce; ... floor 0.2
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2]


def test_step_lr_by_hand_and_get_last_lr():
    opt = optim.SGD([{"params": [Param(np.zeros(1))]}, {"params": [Param(np.zeros(1))], "lr": 1.0}], lr=0.5)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    seen = [sched.get_last_lr()]
    for _ in range(5):
        opt.step()
        sched.step()
        seen.append(sched.get_last_lr())
        assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
    expected = [[0.5, 1.0], [0.5, 1.0], [0.05, 0.1], [0.05, 0.1], [0.005, 0.01], [0.005, 0.01]]
    for a, b in zip(seen, expected):
        assert all(_close(x, y) for x, y in zip(a, b)), (seen, expected)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.5, 1.0]
    sched.get_last_lr().append(123)             # a copy: cannot corrupt the scheduler
    assert len(sched.get_last_lr()) == 2


def test_cosine_closed_form_within_period():
    opt = optim.SGD([Param(np.zeros(1))], lr=0.1)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.01)
    for t in range(1, 11):
        opt.step()
        sched.step()
        expected = 0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * t / 10)) / 2
        assert math.isclose(sched.get_last_lr()[0], expected, rel_tol=1e-12)


def test_one_cycle_initial_values_and_over_stepping(torch):
    opt = optim.SGD([Param(np.zeros(1))], lr=123.0, momentum=0.0)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5, div_factor=20.0)
    group = opt.param_groups[0]
    assert group["initial_lr"] == 1.0 / 20.0
    assert math.isclose(group["lr"], 1.0 / 20.0, rel_tol=1e-15)     # cos annealing at pct 0, as torch
    assert group["max_lr"] == 1.0 and group["min_lr"] == 1.0 / 20.0 / 1e4
    assert group["momentum"] == 0.95 and group["max_momentum"] == 0.95 and group["base_momentum"] == 0.85
    for _ in range(4):
        opt.step()
        sched.step()
    assert math.isclose(group["lr"], group["min_lr"], rel_tol=1e-12)    # the lr of the last (5th) batch
    opt.step()
    sched.step()                 # stepping total_steps times is allowed (torch)...
    with pytest.raises(ValueError) as ours:
        sched.step()
    assert str(ours.value) == "Tried to step 6 times. The specified number of total steps is 5"

    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=123.0, momentum=0.0)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=1.0, total_steps=5, div_factor=20.0)
    for _ in range(5):
        topt.step()
        tsched.step()
    with pytest.raises(ValueError) as theirs:
        tsched.step()
    assert str(theirs.value) == str(ours.value)


@pytest.mark.parametrize("kwargs,message", [
    ({"max_lr": 0.1}, "You must define either total_steps OR (epochs AND steps_per_epoch)"),
    ({"max_lr": 0.1, "total_steps": 0}, "Expected positive integer total_steps, but got 0"),
    ({"max_lr": 0.1, "total_steps": 2.5}, "Expected positive integer total_steps, but got 2.5"),
    ({"max_lr": 0.1, "epochs": 0, "steps_per_epoch": 3}, "Expected positive integer epochs, but got 0"),
    ({"max_lr": 0.1, "epochs": 2, "steps_per_epoch": -1}, "Expected positive integer steps_per_epoch, but got -1"),
    ({"max_lr": 0.1, "total_steps": 10, "pct_start": 1.5}, "Expected float between 0 and 1 pct_start, but got 1.5"),
    ({"max_lr": 0.1, "total_steps": 10, "anneal_strategy": "exp"},
     "anneal_strategy must be one of 'cos' or 'linear', instead got exp"),
    ({"max_lr": [0.1, 0.2], "total_steps": 10},
     "max_lr must have the same length as optimizer.param_groups. max_lr has 2 values, param_groups has 1."),
])
def test_one_cycle_argument_errors(kwargs, message):
    opt = optim.SGD([Param(np.zeros(1))], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError) as info:
        lr_scheduler.OneCycleLR(opt, **kwargs)
    assert str(info.value) == message


def test_one_cycle_needs_momentum_unless_disabled():
    opt = optim.Adagrad([Param(np.zeros(1))])
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    assert "initial_lr" not in opt.param_groups[0]      # nothing was changed
    lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, cycle_momentum=False)


def test_other_argument_errors():
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=1)
    opt = optim.SGD([Param(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="Factor should be < 1.0."):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode avg is unknown!"):
        lr_scheduler.ReduceLROnPlateau(opt, mode="avg")
    with pytest.raises(ValueError, match="threshold mode x is unknown!"):
        lr_scheduler.ReduceLROnPlateau(opt, threshold_mode="x")
    with pytest.raises(ValueError, match="expected 1 min_lrs, got 2"):
        lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0.1, 0.2])
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=3)


def test_warns_when_stepped_before_the_optimizer():
    opt = optim.SGD([Param(np.zeros(1))], lr=0.1)
    sched = lr_scheduler.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()
    opt2 = optim.SGD([Param(np.zeros(1))], lr=0.1)
    sched2 = lr_scheduler.StepLR(opt2, step_size=2)
    opt2.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched2.step()
        sched2.step()


def test_epoch_argument_uses_closed_form(torch):
    opt = optim.SGD([Param(np.zeros(1))], lr=0.1)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ours = lr_scheduler.CosineAnnealingLR(opt, T_max=6, eta_min=0.001)
    theirs = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=6, eta_min=0.001)
    opt.step()
    topt.step()
    for epoch in (3, 4, 9):
        with pytest.warns(UserWarning, match="epoch parameter"):
            ours.step(epoch)
        with pytest.warns(UserWarning):
            theirs.step(epoch)
        assert _close(ours.get_last_lr()[0], theirs.get_last_lr()[0])


def _is_plain(value):
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, dict):
        return all(isinstance(k, (int, str)) and _is_plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return type(value) in (int, float, bool, str)


RESUMABLE = [s for s in SCHEDULES if s[3] != "OneCycleLR" or s[5] >= 10] + [
    ("SGD", {"momentum": 0.9}, [0.1, 0.05], "ReduceLROnPlateau", {"patience": 1, "cooldown": 1}, 26),
    ("SGD", {"momentum": 0.9}, [0.1, 0.05], "ReduceLROnPlateau", {"patience": 0, "min_lr": [0.01, 0.02]}, 26),
]


@pytest.mark.parametrize("opt_name,opt_kwargs,lrs,sched_name,sched_kwargs,steps", RESUMABLE,
                         ids=[f"{s[3]}-{s[0]}-{i}" for i, s in enumerate(RESUMABLE)])
def test_state_dict_round_trip(opt_name, opt_kwargs, lrs, sched_name, sched_kwargs, steps):
    """Save optimizer + scheduler halfway, load into fresh ones, continue: the same
    numbers as an uninterrupted run, with params actually trained by the optimizer."""
    fastnn.set_backend("numpy")
    metrics = PLATEAU_METRICS if sched_name == "ReduceLROnPlateau" else None
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(3) for _ in range(steps)]

    def build():
        params = [Param(np.ones(3)) for _ in lrs]
        opt = getattr(optim, opt_name)(_groups(params, lrs), **opt_kwargs)
        return params, opt, getattr(lr_scheduler, sched_name)(opt, **sched_kwargs)

    def advance(params, opt, sched, t):
        for p in params:
            p.grad = grads[t].copy()
        opt.step()
        sched.step() if metrics is None else sched.step(metrics[t])
        return [_hyper(g) for g in opt.param_groups], sched.get_last_lr(), [p.data.copy() for p in params]

    params, opt, sched = build()
    straight = [advance(params, opt, sched, t) for t in range(steps)]

    half = steps // 2
    params, opt, sched = build()
    for t in range(half):
        advance(params, opt, sched, t)
    opt_sd, sched_sd = opt.state_dict(), sched.state_dict()
    assert _is_plain(sched_sd), sched_sd
    assert _is_plain(opt_sd), opt_sd
    assert "optimizer" not in sched_sd

    params2, opt2, sched2 = build()            # constructed fresh, then restored (torch's order)
    for p, q in zip(params2, params):
        p.data[...] = q.data
    sched2.load_state_dict(sched_sd)
    opt2.load_state_dict(opt_sd)
    assert sched2.get_last_lr() == sched.get_last_lr()
    for t in range(half, steps):
        hyper, last, datas = advance(params2, opt2, sched2, t)
        assert hyper == straight[t][0] and last == straight[t][1], f"step {t}"
        assert all(np.array_equal(a, b) for a, b in zip(datas, straight[t][2])), f"step {t}"


@pytest.mark.parametrize("opt_name,opt_kwargs", [("SGD", {"momentum": 0.9, "nesterov": True}),
                                                 ("Adam", {"weight_decay": 0.01}), ("AdamW", {}),
                                                 ("RMSprop", {"centered": True})])
def test_one_cycle_drives_the_optimizer_like_torch(backend, torch, opt_name, opt_kwargs):
    """The optimizer reads lr and momentum / beta1 from its groups at every step."""
    rng = np.random.default_rng(5)
    init = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(20)]
    p = Param(init.copy())
    tp = torch.tensor(init.copy(), requires_grad=True)
    opt = getattr(optim, opt_name)([p], **opt_kwargs)
    topt = getattr(torch.optim, opt_name)([tp], foreach=False, **opt_kwargs)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=20)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.05, total_steps=20)
    for g in grads:
        p.grad = g.copy()
        tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
