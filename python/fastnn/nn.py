"""Layers and losses with explicit forward / backward, as in the textbook.

Each layer keeps what its backward needs during forward(); backward(dout)
stores parameter gradients in `param.grad` (overwriting: one backward per
step, no accumulation) and returns d(input). Shapes: x is (batch, features);
Linear's weight is (in_features, out_features) so that y = x @ W + b.

Sequential runs a Linear followed by ReLU / Sigmoid / Tanh as one fused kernel
call (bias and activation applied by the GEMM's store, the activation's
derivative and the bias gradient computed in one pass before the backward
GEMMs), and reuses its intermediate buffers while the batch shape repeats.

Layers call the active backend's kernels directly (each checks its arguments),
positionally in the order of the backend interface (see backends.cpp_backend).
"""
import numpy as np

from . import backends
from . import functional as F
from . import sparse_input as _sparse

__all__ = ["Parameter", "Module", "Linear", "ReLU", "Sigmoid", "Tanh", "LeakyReLU", "ELU", "Dropout", "Sequential",
           "MLP", "build", "CrossEntropyLoss", "MSELoss", "BCELoss", "BCEWithLogitsLoss"]


class Parameter:
    """A trainable array (`data`, updated in place by optimizers) and its gradient."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = None

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class Module:
    """Base class: train/eval mode, parameters, state_dict."""

    training = True

    def __call__(self, *args):
        return self.forward(*args)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_parameters(self):
        return []

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def state_dict(self):
        """Copies of the parameters, by name ('0.weight', '0.bias', ...)."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters (in place: optimizers keep working)."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"state_dict does not match the model: missing {missing}, unexpected {unexpected}")
        for name, p in own.items():
            value = np.asarray(state[name])
            if value.shape != p.data.shape:
                raise ValueError(f"{name}: expected shape {p.data.shape}, got {value.shape}")
            p.data[...] = value

    def config(self):
        """A JSON-able description from which `build()` rebuilds this module."""
        return {"type": type(self).__name__}


# ---------------------------------------------------------------------- layers

class Linear(Module):
    """y = x @ W + b, with W of shape (in_features, out_features) as in the
    textbook's Affine layer (torch.nn.Linear keeps the transpose, (out, in):
    see from_torch / to_torch). Weights are drawn from a seeded normal
    distribution: He (std sqrt(2 / in)) for ReLU-like activations,
    Xavier/Glorot (std sqrt(2 / (in + out))) for sigmoid and tanh.

    sparse_input ('auto', True or False) says whether x may be multiplied
    block-sparsely when it is mostly zeros, and whether the Trainer sorts the
    batches to help that: see fastnn.sparse_input."""

    def __init__(self, in_features, out_features, bias=True, *, init="he", seed=None, dtype=np.float32,
                 sparse_input="auto"):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if init not in ("he", "xavier"):
            raise ValueError(f"init must be 'he' or 'xavier', got {init!r}")
        self.in_features, self.out_features, self.init = int(in_features), int(out_features), init
        self.sparse_input = _sparse.check_mode(sparse_input)
        std = np.sqrt(2.0 / in_features) if init == "he" else np.sqrt(2.0 / (in_features + out_features))
        weight = _rng(seed).standard_normal((in_features, out_features)) * std
        self.weight = Parameter(np.ascontiguousarray(weight, dtype=dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None
        self._x = None

    @classmethod
    def from_torch(cls, linear, *, sparse_input="auto"):
        """A Linear holding a copy of torch.nn.Linear `linear`'s weights: its
        weight (out, in) transposed to (in, out), and its bias; float64 stays
        float64, any other dtype becomes float32."""
        import torch
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"from_torch takes a torch.nn.Linear, got {type(linear).__name__}")
        dtype = np.float64 if linear.weight.dtype == torch.float64 else np.float32
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype=dtype,
                    sparse_input=sparse_input)
        layer.weight.data[...] = linear.weight.detach().cpu().double().numpy().T
        if linear.bias is not None:
            layer.bias.data[...] = linear.bias.detach().cpu().double().numpy()
        return layer

    def to_torch(self):
        """A torch.nn.Linear with a copy of these weights (W transposed to torch's (out, in))."""
        import torch
        dtype = torch.float64 if self.weight.data.dtype == np.float64 else torch.float32
        linear = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(self.weight.data.T)))
            if self.bias is not None:
                linear.bias.copy_(torch.from_numpy(self.bias.data.copy()))
        return linear

    def named_parameters(self):
        return [("weight", self.weight)] + ([("bias", self.bias)] if self.bias is not None else [])

    def forward(self, x, activation="none", out=None):
        x = F.as_float_array(x, "x", self.weight.data.dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}) expects x of shape "
                             f"(batch, {self.in_features}), got {x.shape}")
        self._x = x
        b = self.bias.data if self.bias is not None else None
        forward, _ = _sparse.linear_kernels(backends.active(), self.sparse_input)
        return forward(x, self.weight.data, b, activation, out)

    def backward(self, dout, y=None, activation="none", need_dx=True, dx_out=None, x_activation="none"):
        if self._x is None:
            raise RuntimeError("Linear.backward called before forward")
        dout = F.as_float_array(dout, "dout", self.weight.data.dtype)
        _, backward = _sparse.linear_kernels(backends.active(), self.sparse_input)
        dx, dW, db = backward(self._x, self.weight.data, dout, y, activation, need_dx, dx_out,
                              self.weight.grad if _reusable(self.weight) else None,
                              self.bias.grad if self.bias is not None and _reusable(self.bias) else None,
                              x_activation)
        self.weight.grad = dW
        if self.bias is not None:
            self.bias.grad = db
        return dx

    def config(self):
        return {"type": "Linear", "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "init": self.init, "dtype": self.weight.data.dtype.name,
                "sparse_input": self.sparse_input}


def _reusable(p):
    """The gradient array of p can be overwritten in place."""
    return p.grad is not None and p.grad.shape == p.data.shape and p.grad.dtype == p.data.dtype


class _Activation(Module):
    """An elementwise activation whose backward needs its output (`saves='y'`)
    or its input (`saves='x'`)."""

    kernel = None
    saves = "y"

    def _params(self):
        return ()

    def forward(self, x, out=None):
        x = F.as_float_array(x, "x")
        y = getattr(backends.active(), self.kernel)(x, *self._params(), out=out)
        self._saved = y if self.saves == "y" else x
        return y

    def backward(self, dout):
        dout = F.as_float_array(dout, "dout", self._saved.dtype)
        return getattr(backends.active(), self.kernel + "_backward")(self._saved, dout, *self._params())


class ReLU(_Activation):
    kernel = "relu"


class Sigmoid(_Activation):
    kernel = "sigmoid"


class Tanh(_Activation):
    kernel = "tanh"


class LeakyReLU(_Activation):
    kernel = "leaky_relu"
    saves = "x"

    def __init__(self, negative_slope=0.01):
        self.negative_slope = float(negative_slope)

    def _params(self):
        return (self.negative_slope,)

    def config(self):
        return {"type": "LeakyReLU", "negative_slope": self.negative_slope}


class ELU(_Activation):
    kernel = "elu"
    saves = "x"

    def __init__(self, alpha=1.0):
        self.alpha = float(alpha)

    def _params(self):
        return (self.alpha,)

    def config(self):
        return {"type": "ELU", "alpha": self.alpha}


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and
    scale the rest by 1 / (1 - p); in eval, the identity."""

    def __init__(self, p=0.5, *, seed=None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = _rng(seed)
        self._mask = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        self._mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, dout):
        return dout if self._mask is None else dout * self._mask

    def config(self):
        return {"type": "Dropout", "p": self.p}


_FUSABLE = {ReLU: "relu", Sigmoid: "sigmoid", Tanh: "tanh"}


class Sequential(Module):
    """Layers applied in order. Linear + ReLU/Sigmoid/Tanh pairs run fused."""

    def __init__(self, *layers):
        for layer in layers:
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes Module instances, got {type(layer).__name__}")
        self.layers = list(layers)
        self._plan = self._fuse()
        self._buffers = {}

    def _fuse(self):
        """Steps of (first layer index, activation name or None): a Linear whose
        next layer is a fusable activation becomes one step."""
        plan, i = [], 0
        while i < len(self.layers):
            layer = self.layers[i]
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if isinstance(layer, Linear) and type(nxt) in _FUSABLE:
                plan.append((i, _FUSABLE[type(nxt)]))
                i += 2
            else:
                plan.append((i, None))
                i += 1
        return plan

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def named_parameters(self):
        return [(f"{i}.{name}", p) for i, layer in enumerate(self.layers) for name, p in layer.named_parameters()]

    def train(self, mode=True):
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def _buffer(self, key, shape, dtype):
        """A scratch array reused across calls with the same shape."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            if len(self._buffers) > 8 * max(len(self._plan), 1):
                self._buffers.clear()  # many batch shapes: don't hoard memory
            buf = np.empty(shape, dtype)
            self._buffers[key] = buf
        return buf

    def forward(self, x):
        last = len(self._plan) - 1
        for step, (i, activation) in enumerate(self._plan):
            layer = self.layers[i]
            if activation is None:
                x = layer(x)
                continue
            rows = x.shape[0] if hasattr(x, "shape") and x.ndim == 2 else None
            # The final output is handed to the caller, so it is never a reused buffer.
            out = None if step == last or rows is None else \
                self._buffer(("y", step, x.shape[0]), (rows, layer.out_features), layer.weight.data.dtype)
            x = layer.forward(x, activation, out=out)
            self.layers[i + 1]._saved = x
        return x

    def backward(self, dout, need_input_grad=True):
        """Returns d(input), or None when need_input_grad is False (saves the
        first layer's dx GEMM when training)."""
        # A Linear right after a fused pair takes that pair's activation
        # gradient into its dx GEMM's store, and the pair then skips it.
        dout_through_activation = False
        for step in range(len(self._plan) - 1, -1, -1):
            i, activation = self._plan[step]
            layer = self.layers[i]
            if not isinstance(layer, Linear):
                dout = layer.backward(dout)
                dout_through_activation = False
                continue
            need_dx = need_input_grad or step > 0
            dx_out = None
            if need_dx and step > 0:
                dx_out = self._buffer(("dx", step, dout.shape[0]), (dout.shape[0], layer.in_features),
                                      layer.weight.data.dtype)
            if dout_through_activation:
                activation = None
            y = self.layers[i + 1]._saved if activation else None
            x_activation = (self._plan[step - 1][1] if need_dx and step > 0 else None) or "none"
            dout = layer.backward(dout, y, activation or "none", need_dx, dx_out=dx_out, x_activation=x_activation)
            dout_through_activation = x_activation != "none"
        return dout

    def config(self):
        return {"type": "Sequential", "layers": [layer.config() for layer in self.layers]}


class MLP(Sequential):
    """A multilayer perceptron: sizes = [in, hidden..., out], `activation`
    after every hidden Linear, optional Dropout after each activation;
    sparse_input is every Linear's (see Linear)."""

    _ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "leaky_relu": LeakyReLU, "elu": ELU}

    def __init__(self, sizes, activation="relu", dropout=0.0, *, seed=0, dtype=np.float32, sparse_input="auto"):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least the input and output sizes, got {sizes}")
        if activation not in self._ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(self._ACTIVATIONS)}, got {activation!r}")
        self.sizes, self.activation, self.dropout = sizes, activation, float(dropout)
        self.sparse_input = _sparse.check_mode(sparse_input)
        rng = _rng(seed)
        init = "xavier" if activation in ("sigmoid", "tanh") else "he"
        layers = []
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(n_in, n_out, init=init, seed=rng, dtype=dtype, sparse_input=sparse_input))
            if k < len(sizes) - 2:
                layers.append(self._ACTIVATIONS[activation]())
                if dropout > 0:
                    layers.append(Dropout(dropout, seed=rng))
        super().__init__(*layers)

    def config(self):
        return {"type": "MLP", "sizes": self.sizes, "activation": self.activation, "dropout": self.dropout,
                "dtype": self.layers[0].weight.data.dtype.name, "sparse_input": self.sparse_input}


def build(config):
    """Rebuild a module from its config() (weights freshly initialised)."""
    kind = config["type"]
    if kind == "MLP":
        return MLP(config["sizes"], config["activation"], config["dropout"], dtype=np.dtype(config["dtype"]),
                   sparse_input=config.get("sparse_input", "auto"))
    if kind == "Sequential":
        return Sequential(*[build(c) for c in config["layers"]])
    if kind == "Linear":
        return Linear(config["in_features"], config["out_features"], config["bias"], init=config["init"],
                      dtype=np.dtype(config["dtype"]), sparse_input=config.get("sparse_input", "auto"))
    simple = {"ReLU": ReLU, "Sigmoid": Sigmoid, "Tanh": Tanh}
    if kind in simple:
        return simple[kind]()
    if kind == "LeakyReLU":
        return LeakyReLU(config["negative_slope"])
    if kind == "ELU":
        return ELU(config["alpha"])
    if kind == "Dropout":
        return Dropout(config["p"])
    raise ValueError(f"unknown module type {kind!r} in config")


# ---------------------------------------------------------------------- losses

class _Loss:
    """forward(pred, target) -> float, keeping d(loss)/d(pred) for backward()."""

    def __init__(self, reduction="mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum' for a loss module, got {reduction!r}")
        self.reduction = reduction
        self._grad = None

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def backward(self):
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._grad


class CrossEntropyLoss(_Loss):
    """Softmax + cross-entropy on logits, fused: the gradient is computed in
    the same pass as the loss. Targets: integer labels or probabilities."""

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.label_smoothing = label_smoothing

    def forward(self, logits, target):
        out = self._grad if self._grad is not None and self._grad.shape == np.shape(logits) \
            and self._grad.dtype == getattr(logits, "dtype", None) else None
        loss, self._grad = F.softmax_cross_entropy(logits, target, self.reduction, self.label_smoothing, out=out)
        return float(loss)


class MSELoss(_Loss):
    def forward(self, pred, target):
        loss = F.mean_squared_error(pred, target, self.reduction)
        self._grad = F.mean_squared_error_backward(pred, target, self.reduction)
        return float(loss)


class BCELoss(_Loss):
    def forward(self, p, target):
        loss = F.binary_cross_entropy(p, target, self.reduction)
        self._grad = F.binary_cross_entropy_backward(p, target, self.reduction)
        return float(loss)


class BCEWithLogitsLoss(_Loss):
    def forward(self, z, target):
        loss = F.binary_cross_entropy_with_logits(z, target, self.reduction)
        self._grad = F.binary_cross_entropy_with_logits_backward(z, target, self.reduction)
        return float(loss)
