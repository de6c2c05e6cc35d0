"""Optimizers: torch.optim's arguments, defaults and update rules, on NumPy arrays.

    opt = fastnn.optim.Adam(model.parameters(), lr=1e-3)
    ...                               # backward pass fills every p.grad
    opt.step()                        # one fused in-place kernel per parameter
    opt.zero_grad()

A parameter is any object with `.data` (a C-contiguous, writeable float32 or
float64 ndarray, updated in place and never rebound) and `.grad` (an ndarray of
the same shape and dtype, or None: such a parameter is skipped, as in torch).
`params` is an iterable of parameters, or of param-group dicts
(`{'params': [...], 'lr': ...}`), exactly as for torch.optim.

`step()` calls one kernel of the active backend per parameter
(`backends.active().adam_step(...)` etc.); the state arrays are allocated once,
lazily, on a parameter's first step. `state_dict()` holds only numpy arrays,
ints, floats, bools, strings and lists / tuples / dicts of those, so it can be
stored in an .npz without pickle; `load_state_dict()` makes a resumed run
bit-identical to an uninterrupted one.
"""
import warnings
from collections import defaultdict
from copy import deepcopy
from itertools import chain

import numpy as np

from .. import backends

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "lr_scheduler"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# State entries that are arrays shaped like their parameter (cast to its dtype on load).
_ARRAY_STATE = frozenset(("momentum_buffer", "sum", "square_avg", "grad_avg", "exp_avg", "exp_avg_sq",
                          "max_exp_avg_sq"))


def _is_param(obj):
    return isinstance(getattr(obj, "data", None), np.ndarray)


def _check_param(p):
    if not _is_param(p):
        raise TypeError("optimizer can only optimize parameters (objects with a .data numpy array), "
                        f"but one of the params is {type(p).__module__}.{type(p).__qualname__}")
    data = p.data
    if data.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"a parameter's .data must be float32 or float64, got {data.dtype}")
    if not data.flags.c_contiguous:
        raise ValueError("a parameter's .data must be C-contiguous (it is updated in place)")
    if not data.flags.writeable:
        raise ValueError("a parameter's .data must be writeable (it is updated in place)")
    try:
        hash(p)
    except TypeError:
        raise TypeError(f"parameters must be hashable (state is keyed by parameter); "
                        f"{type(p).__qualname__} is not") from None


def _fix_grad(p, data, grad):
    """The slow path of the per-step gradient check: a usable grad array, or an error."""
    if not isinstance(grad, np.ndarray):
        raise TypeError(f"a parameter's .grad must be a numpy array or None, got {type(grad).__name__}")
    if grad.dtype != data.dtype:
        raise TypeError(f"a parameter's .grad has dtype {grad.dtype}, but its .data has dtype {data.dtype}")
    if grad.shape != data.shape:
        raise ValueError(f"a parameter's .grad has shape {grad.shape}, but its .data has shape {data.shape}")
    if not data.flags.c_contiguous:
        raise ValueError("a parameter's .data must be C-contiguous (it is updated in place)")
    return np.ascontiguousarray(grad).view(np.ndarray)


def _grad_of(p):
    """(data, grad) of p, or (data, None) when p has no gradient. Cheap in the usual case."""
    grad = p.grad
    data = p.data
    if grad is None:
        return data, None
    if (grad.__class__ is not np.ndarray or grad.dtype != data.dtype or grad.shape != data.shape
            or not grad.flags.c_contiguous):
        grad = _fix_grad(p, data, grad)
    return data, grad


def _zeros(data):
    return np.zeros(data.shape, dtype=data.dtype)


def _plain(value):
    """A deep copy of value made of numpy arrays, Python scalars, strings and containers."""
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _state_index(key):
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    raise ValueError(f"loaded state dict has a state key {key!r} that is not a parameter index")


def _step_value(value):
    value = np.asarray(value).item() if isinstance(value, (np.ndarray, np.generic)) else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise ValueError(f"loaded state has an invalid 'step' value {value!r}")
    return int(value)


def _nonneg(value, what):
    if not 0.0 <= value:
        raise ValueError(f"Invalid {what}: {value}")


class Optimizer:
    """Base class: holds `param_groups` (list of dicts: 'params' plus hyperparameters,
    which schedulers may change between steps) and per-parameter `state`."""

    def __init__(self, params, defaults):
        self._check_hyperparameters(defaults)
        self._normalize_group(defaults)
        self.defaults = defaults
        self.state = defaultdict(dict)
        self.param_groups = []
        self._opt_called = False          # lr schedulers warn when stepped before the optimizer
        if isinstance(params, (np.ndarray, dict)) or _is_param(params):
            raise TypeError("params argument given to the optimizer should be an iterable of parameters "
                            f"or dicts, but got {type(params).__module__}.{type(params).__qualname__}")
        if isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but "
                            "the ordering of tensors in sets will change between runs. Please use a list instead.")
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    # -- subclass hooks
    @staticmethod
    def _check_hyperparameters(group):
        """Raise ValueError (torch's messages) for invalid hyperparameters in `group`."""

    def _normalize_group(self, group):
        """Canonical types for a group's hyperparameters (after defaults are filled in)."""

    def _init_state(self, p, group):
        """State created when a parameter joins the optimizer (Adagrad, like torch); lazy otherwise."""

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

    def add_param_group(self, param_group):
        """Add a param group (a dict with 'params' and optional hyperparameters) to `param_groups`."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        param_group = dict(param_group)   # the caller's dict is not modified
        params = param_group["params"]
        if _is_param(params):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but "
                            "the ordering of tensors in sets will change between runs. Please use a list instead.")
        elif isinstance(params, np.ndarray):
            raise TypeError("param_group['params'] must be parameters (objects with .data and .grad), "
                            "not a numpy array")
        else:
            params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            params = [p[1] for p in params]
            param_group["param_names"] = names
        param_group["params"] = params
        for p in params:
            _check_param(p)
        for name, default in self.defaults.items():
            param_group.setdefault(name, default)
        self._check_hyperparameters(param_group)
        self._normalize_group(param_group)

        if len({id(p) for p in params}) != len(params):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "in future, this will cause an error; "
                          "see github.com/pytorch/pytorch/issues/40967 for more information", stacklevel=3)
        seen = set()
        for group in self.param_groups:
            seen.update(id(p) for p in group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                which = "with names" if "param_names" in param_group else "without names"
                raise ValueError("all optimizer param groups should be with/without names. "
                                 f"cannot add param group {which} to the optimizer")
        if not seen.isdisjoint(id(p) for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)
        for p in params:
            self._init_state(p, param_group)

    def zero_grad(self, set_to_none=True):
        """Reset every parameter's gradient: to None (default), or fill it with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.fill(0)

    # Each optimizer names its backend kernel, reads a group's hyperparameters
    # once per step (_hyperparameters) and updates one parameter (_update).
    kernel_name = None

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure() if given."""
        loss = None if closure is None else closure()
        self._opt_called = True
        kernel = getattr(backends.active(), self.kernel_name)
        for group in self.param_groups:
            hyper = self._hyperparameters(group)
            for p in group["params"]:
                data, grad = _grad_of(p)
                if grad is not None:
                    self._update(kernel, p, data, grad, hyper)
        return loss

    def _hyperparameters(self, group):
        raise NotImplementedError

    def _update(self, kernel, p, data, grad, hyper):
        raise NotImplementedError

    # -- state dict
    def state_dict(self):
        """{'state': {index: {name: value}}, 'param_groups': [{hyperparameters..., 'params': [indices]}]}:
        torch's layout, with parameters numbered in param_groups order. Values are copies
        (numpy arrays, Python numbers, bools, strings, lists, tuples, dicts)."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: _plain(v) for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                s = self.state.get(p)
                if s and index[id(p)] not in state:
                    state[index[id(p)]] = {k: _plain(v) for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a state_dict() (of an optimizer of the same kind over parameters of the same
        shapes): hyperparameters are replaced, state arrays are copied into the existing
        arrays (or new ones). Everything is checked before anything changes."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("an optimizer state dict must be a dict with 'state' and 'param_groups'")
        groups = self.param_groups
        saved_groups = state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group "
                             "that doesn't match the size of optimizer's group")
        id_map = {_state_index(k): p for k, p in zip(chain.from_iterable(s["params"] for s in saved_groups),
                                                     chain.from_iterable(g["params"] for g in groups))}
        new_groups = []
        for group, saved in zip(groups, saved_groups):
            new = {k: deepcopy(v) for k, v in saved.items() if k != "params"}
            new["params"] = group["params"]
            if "param_names" in group and "param_names" not in new:
                new["param_names"] = group["param_names"]
            self._check_hyperparameters(new)
            self._normalize_group(new)
            new_groups.append(new)

        saved_state = state_dict["state"]
        if not isinstance(saved_state, dict):
            raise ValueError("the 'state' of an optimizer state dict must be a dict")
        loaded = []
        for key, values in saved_state.items():
            idx = _state_index(key)
            if idx not in id_map:
                raise ValueError(f"loaded state dict has state for parameter {idx}, "
                                 "which is in none of its param_groups")
            if not isinstance(values, dict):
                raise ValueError(f"loaded state of parameter {idx} must be a dict, got {type(values).__name__}")
            p = id_map[idx]
            shape = p.data.shape
            checked = {}
            for name, value in values.items():
                if name == "step":
                    checked[name] = _step_value(value)
                elif name in _ARRAY_STATE or isinstance(value, np.ndarray):
                    arr = np.asarray(value)
                    if arr.shape != shape:
                        raise ValueError(f"loaded state '{name}' of parameter {idx} has shape {arr.shape}, "
                                         f"but the parameter has shape {shape}")
                    if arr.dtype.kind not in "fiu":
                        raise TypeError(f"loaded state '{name}' of parameter {idx} has dtype {arr.dtype}")
                    checked[name] = arr
                else:
                    checked[name] = deepcopy(value)
            loaded.append((p, checked))

        # Nothing below can fail: commit.
        state = defaultdict(dict)
        for p, checked in loaded:
            old = self.state.get(p) or {}
            s = {}
            for name, value in checked.items():
                if isinstance(value, np.ndarray):
                    dst = old.get(name)
                    if not (isinstance(dst, np.ndarray) and dst.shape == p.data.shape and dst.dtype == p.data.dtype
                            and dst.flags.c_contiguous and dst.flags.writeable):
                        dst = np.empty(p.data.shape, dtype=p.data.dtype)
                    np.copyto(dst, value, casting="unsafe")
                    value = dst
                s[name] = value
            state[p] = s
        self.state = state
        for group, new in zip(groups, new_groups):
            group.clear()
            group.update(new)


# ------------------------------------------------------------------------ optimizers

class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum, as torch.optim.SGD."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False):
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize}
        super().__init__(params, defaults)

    @staticmethod
    def _check_hyperparameters(group):
        _nonneg(group["lr"], "learning rate")
        _nonneg(group["momentum"], "momentum value")
        _nonneg(group["weight_decay"], "weight_decay value")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    kernel_name = "sgd_step"

    def _hyperparameters(self, group):
        return (float(group["lr"]), float(group["momentum"]), float(group["dampening"]), bool(group["nesterov"]),
                float(group["weight_decay"]), bool(group["maximize"]))

    def _update(self, kernel, p, data, grad, hyper):
        lr, momentum, dampening, nesterov, weight_decay, maximize = hyper
        if momentum == 0:
            kernel(data, grad, None, lr, 0.0, dampening, nesterov, weight_decay, maximize, True)
            return
        s = self.state[p]
        buf = s.get("momentum_buffer")
        first = buf is None
        if first:
            buf = s["momentum_buffer"] = _zeros(data)
        kernel(data, grad, buf, lr, momentum, dampening, nesterov, weight_decay, maximize, first)


class Adagrad(Optimizer):
    """Adagrad, as torch.optim.Adagrad (its state is created with the optimizer, as in torch)."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, *,
                 maximize=False):
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "maximize": maximize}
        super().__init__(params, defaults)

    @staticmethod
    def _check_hyperparameters(group):
        _nonneg(group["lr"], "learning rate")
        _nonneg(group["lr_decay"], "lr_decay value")
        _nonneg(group["weight_decay"], "weight_decay value")
        _nonneg(group["initial_accumulator_value"], "initial_accumulator_value value")
        _nonneg(group["eps"], "epsilon value")

    def _init_state(self, p, group):
        s = self.state[p]
        s["step"] = 0
        s["sum"] = np.full(p.data.shape, group["initial_accumulator_value"], dtype=p.data.dtype)

    kernel_name = "adagrad_step"

    def _hyperparameters(self, group):
        return (float(group["lr"]), float(group["lr_decay"]), float(group["weight_decay"]), float(group["eps"]),
                bool(group["maximize"]), group)

    def _update(self, kernel, p, data, grad, hyper):
        lr, lr_decay, weight_decay, eps, maximize, group = hyper
        s = self.state[p]
        state_sum = s.get("sum")
        if state_sum is None:   # a state dict without this parameter's state was loaded
            self._init_state(p, group)
            state_sum = s["sum"]
        step = s.get("step", 0) + 1
        kernel(data, grad, state_sum, step, lr, lr_decay, weight_decay, eps, maximize)
        s["step"] = step


class RMSprop(Optimizer):
    """RMSprop, optionally centered and with momentum, as torch.optim.RMSprop."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, *,
                 maximize=False):
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                    "weight_decay": weight_decay, "maximize": maximize}
        super().__init__(params, defaults)

    @staticmethod
    def _check_hyperparameters(group):
        _nonneg(group["lr"], "learning rate")
        _nonneg(group["eps"], "epsilon value")
        _nonneg(group["momentum"], "momentum value")
        _nonneg(group["weight_decay"], "weight_decay value")
        _nonneg(group["alpha"], "alpha value")

    kernel_name = "rmsprop_step"

    def _hyperparameters(self, group):
        return (float(group["lr"]), float(group["alpha"]), float(group["eps"]), float(group["weight_decay"]),
                float(group["momentum"]), bool(group["centered"]), bool(group["maximize"]))

    def _update(self, kernel, p, data, grad, hyper):
        lr, alpha, eps, weight_decay, momentum, centered, maximize = hyper
        s = self.state[p]
        square_avg = s.get("square_avg")
        if square_avg is None:
            s.setdefault("step", 0)
            square_avg = s["square_avg"] = _zeros(data)
        grad_avg = buf = None
        if centered:
            grad_avg = s.get("grad_avg")
            if grad_avg is None:
                grad_avg = s["grad_avg"] = _zeros(data)
        if momentum > 0:
            buf = s.get("momentum_buffer")
            if buf is None:
                buf = s["momentum_buffer"] = _zeros(data)
        step = s.get("step", 0) + 1
        kernel(data, grad, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay, momentum, centered, maximize)
        s["step"] = step


_AMSGRAD_MESSAGE = ("amsgrad=True is not supported by fastnn: no backend kernel keeps the running maximum "
                    "of exp_avg_sq; use amsgrad=False")


class Adam(Optimizer):
    """Adam, as torch.optim.Adam (decoupled_weight_decay=True makes it AdamW). amsgrad is refused."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
                    "maximize": maximize, "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    @staticmethod
    def _check_hyperparameters(group):
        _nonneg(group["lr"], "learning rate")
        _nonneg(group["eps"], "epsilon value")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        _nonneg(group["weight_decay"], "weight_decay value")
        if group["amsgrad"]:
            raise NotImplementedError(_AMSGRAD_MESSAGE)

    def _normalize_group(self, group):
        group["betas"] = (float(group["betas"][0]), float(group["betas"][1]))

    kernel_name = "adam_step"

    def _hyperparameters(self, group):
        if group["amsgrad"]:
            raise NotImplementedError(_AMSGRAD_MESSAGE)
        beta1, beta2 = group["betas"]
        return (float(group["lr"]), float(beta1), float(beta2), float(group["eps"]), float(group["weight_decay"]),
                bool(group["decoupled_weight_decay"]), bool(group["maximize"]))

    def _update(self, kernel, p, data, grad, hyper):
        lr, beta1, beta2, eps, weight_decay, decoupled, maximize = hyper
        s = self.state[p]
        exp_avg = s.get("exp_avg")
        exp_avg_sq = s.get("exp_avg_sq")
        if exp_avg is None or exp_avg_sq is None:
            s["step"] = 0
            exp_avg = s["exp_avg"] = _zeros(data)
            exp_avg_sq = s["exp_avg_sq"] = _zeros(data)
        step = s["step"] + 1
        kernel(data, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled, maximize)
        s["step"] = step


class AdamW(Adam):
    """AdamW (decoupled weight decay), as torch.optim.AdamW."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def _normalize_group(self, group):
        super()._normalize_group(group)
        group["decoupled_weight_decay"] = True   # as torch: AdamW stays AdamW whatever is loaded


from . import lr_scheduler  # noqa: E402  (fastnn.optim.lr_scheduler.StepLR)
