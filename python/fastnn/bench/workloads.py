"""The work each framework does inside its worker, written the way its users write it:
the kernels, the MNIST training loop and the time-to-98% recipe.

Imported only in worker processes (it imports NumPy). Every worker builds the
same inputs from the same seeds, starts training from the same initial weights
(`initial_weights`, fastnn's own initialisation) and draws the same shuffled
batches (np.random.default_rng(seed).permutation per epoch, as fastnn's Trainer).
"""
import gc
import math
import time
import warnings

import numpy as np

from . import reference as ref
from .cases import BATCH, SIZES

F32 = np.float32
_DATA = {}


# ======================================================================== data

def load_data(synthetic):
    """((x_train, y_train), (x_test, y_test), description), cached per process."""
    if synthetic not in _DATA:
        if not synthetic:
            try:
                from ..datasets import load_mnist
                (x, y), (xt, yt) = load_mnist(normalize=True, flatten=True)
                _DATA[synthetic] = (x, y), (xt, yt), "MNIST"
                return _DATA[synthetic]
            except Exception as exc:  # offline and no cache: the run goes on, labelled
                reason = f"MNIST unavailable: {type(exc).__name__}: {exc}"
        else:
            reason = "tiny mode"
        rng = np.random.default_rng(0)
        x = rng.random((4096, SIZES[0]), dtype=F32)
        y = rng.integers(0, SIZES[-1], x.shape[0]).astype(np.int64)
        _DATA[synthetic] = (x, y), (x[:1024].copy(), y[:1024].copy()), f"synthetic random data ({reason})"
    return _DATA[synthetic]


def initial_weights(sizes, seed):
    """fastnn's nn.MLP(sizes, 'relu', seed=seed) initialisation: He-normal W (in, out), zero b."""
    rng = np.random.default_rng(seed)
    return [(np.ascontiguousarray(rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in), dtype=F32),
             np.zeros(n_out, F32)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def onecycle(total_steps, max_lr):
    """A generator of torch.optim.lr_scheduler.OneCycleLR's (lr, beta1) per step, at its
    defaults (cosine, pct_start 0.3, div_factor 25, final_div_factor 1e4, beta1 0.95-0.85)."""
    initial = max_lr / 25.0
    phases = [(0.3 * total_steps - 1, initial, max_lr, 0.95, 0.85),
              (total_steps - 1, max_lr, initial / 1e4, 0.85, 0.95)]
    for step in range(total_steps):
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                pct = (step - start) / (end - start)
                cos = (math.cos(math.pi * pct) + 1) / 2
                yield lr1 + (lr0 - lr1) * cos, m1 + (m0 - m1) * cos
                break
            start = end


def _schedule(recipe, steps_per_epoch):
    """(lr, beta1) per step for the hand-written loops, or None for a constant lr."""
    if recipe["optimizer"] != "adam" or recipe["schedule"] not in ("none", "onecycle"):
        raise NotImplementedError(f"the recipe's {recipe['optimizer']} / {recipe['schedule']} is not written "
                                  "for this framework")
    if recipe["schedule"] == "none":
        return None
    return onecycle(recipe["epochs"] * steps_per_epoch, recipe["lr"])


# ===================================================================== kernels

def kernel_inputs(kernel, shape, index, synthetic):
    """The case's inputs, identical in every worker (seeded by the case's index)."""
    rng = np.random.default_rng(index)
    if kernel in ("relu", "sigmoid", "tanh"):
        return {"x": rng.standard_normal(shape, dtype=F32)}
    if kernel in ("softmax", "log_softmax", "cross_entropy", "softmax_cross_entropy"):
        n, c = shape
        # Unit-variance logits: no probability falls near the textbook's 1e-7 guard.
        return {"x": rng.standard_normal((n, c), dtype=F32), "t": rng.integers(0, c, n).astype(np.int64)}
    if kernel == "matmul":
        m, k, n = shape
        return {"a": rng.standard_normal((m, k), dtype=F32), "b": rng.standard_normal((k, n), dtype=F32)}
    if kernel in ("linear", "linear_backward"):
        m, k, n = shape[:3]
        if len(shape) > 3:  # a batch of MNIST images (mostly zeros), not random numbers
            (x_all, _), _, _ = load_data(synthetic)
            x = np.ascontiguousarray(x_all[rng.choice(x_all.shape[0], m, replace=False)], dtype=F32)
        else:
            x = rng.standard_normal((m, k), dtype=F32)
        return {"x": x, "W": (rng.standard_normal((k, n)) / np.sqrt(k)).astype(F32),
                "b": rng.standard_normal(n, dtype=F32), "dy": rng.standard_normal((m, n), dtype=F32)}
    if kernel == "adam_step":
        shapes = [(shape[0], shape[1])] if not isinstance(shape, str) else \
            [s for n_in, n_out in zip(SIZES[:-1], SIZES[1:]) for s in ((n_in, n_out), (n_out,))]
        return {"grads": [(rng.standard_normal(s) * 1e-2).astype(F32) for s in shapes],
                "params": [(rng.standard_normal(s) * 0.05).astype(F32) for s in shapes]}
    raise ValueError(f"unknown kernel {kernel!r}")


def kernel_work(kernel, shape, inp):
    """(work, unit): FLOPs for GFLOP/s, bytes each kernel must move once for GB/s."""
    if kernel in ("relu", "sigmoid", "tanh"):
        return 8.0 * inp["x"].size, "GB/s"
    if kernel in ("softmax", "log_softmax"):
        return 8.0 * inp["x"].size, "GB/s"
    if kernel in ("cross_entropy", "softmax_cross_entropy"):
        n, c = inp["x"].shape
        return (4.0 if kernel == "cross_entropy" else 8.0) * n * c + 8.0 * n, "GB/s"
    if kernel == "matmul":
        m, k, n = shape
        return 2.0 * m * k * n, "GFLOP/s"
    if kernel in ("linear", "linear_backward"):
        m, k, n = shape[:3]
        # On images fastnn skips the zeros: its rate counts the dense product's FLOPs.
        unit = "GFLOP/s" if len(shape) == 3 else "GFLOP/s dense-equiv."
        return (2.0 if kernel == "linear" else 4.0) * m * k * n + m * n, unit
    return 7.0 * 4 * sum(p.size for p in inp["params"]), "GB/s"


def textbook_kernel(kernel, inp):
    if kernel in ("relu", "sigmoid", "tanh", "softmax", "log_softmax"):
        fn, x = getattr(ref, kernel), inp["x"]
        return lambda: fn(x)
    if kernel in ("cross_entropy", "softmax_cross_entropy"):
        fn, x, t = getattr(ref, kernel), inp["x"], inp["t"]
        return lambda: fn(x, t)
    if kernel == "matmul":
        return lambda: ref.matmul(inp["a"], inp["b"])
    if kernel == "linear":
        return lambda: ref.linear(inp["x"], inp["W"], inp["b"])
    if kernel == "linear_backward":
        return lambda: ref.linear_backward(inp["x"], inp["W"], inp["dy"])
    params = {f"p{i}": p.copy() for i, p in enumerate(inp["params"])}
    grads = {f"p{i}": g for i, g in enumerate(inp["grads"])}
    opt = ref.Adam(lr=1e-3)
    return lambda: opt.update(params, grads)


def fastnn_kernel(kernel, inp, backend):
    from .. import backends
    from .. import functional as F
    if kernel in ("relu", "sigmoid", "tanh", "softmax", "log_softmax"):
        fn, x = getattr(F, kernel), inp["x"]
        return lambda: fn(x)
    if kernel in ("cross_entropy", "softmax_cross_entropy"):
        fn, x, t = getattr(F, kernel), inp["x"], inp["t"]
        return lambda: fn(x, t)
    if kernel == "matmul":
        return lambda: F.matmul(inp["a"], inp["b"])
    if kernel == "linear":
        return lambda: F.linear(inp["x"], inp["W"], inp["b"])
    if kernel == "linear_backward":
        return lambda: F.linear_backward(inp["x"], inp["W"], inp["dy"])
    kern = backends.load(backend)  # the optimizer's fused kernel, as fastnn.optim.Adam calls it
    state = [(p.copy(), g, np.zeros_like(p), np.zeros_like(p)) for p, g in zip(inp["params"], inp["grads"])]

    def step():
        for p, g, m1, m2 in state:
            kern.adam_step(p, g, m1, m2, 10, 1e-3)
    return step


def torch_kernel(torch, kernel, inp, dtype="float32"):
    """The kernel in PyTorch; with dtype "bfloat16", the matmuls on bfloat16 tensors (the others stay float32)."""
    t = {k: torch.from_numpy(v) for k, v in inp.items() if isinstance(v, np.ndarray)}
    if dtype != "float32" and kernel in ("matmul", "linear", "linear_backward"):
        t = {k: v.to(getattr(torch, dtype)) for k, v in t.items()}
    tf = torch.nn.functional
    if kernel in ("relu", "sigmoid", "tanh"):
        fn, x = getattr(torch, kernel), t["x"]
        return lambda: fn(x)
    if kernel == "softmax":
        return lambda: torch.softmax(t["x"], dim=1)
    if kernel == "log_softmax":
        return lambda: torch.log_softmax(t["x"], dim=1)
    if kernel == "cross_entropy":
        return lambda: tf.cross_entropy(t["x"], t["t"])
    if kernel == "softmax_cross_entropy":
        def fn():
            leaf = t["x"].detach().requires_grad_()
            loss = tf.cross_entropy(leaf, t["t"])
            (grad,) = torch.autograd.grad(loss, leaf)
            return loss.detach(), grad
        return fn
    if kernel == "matmul":
        return lambda: torch.mm(t["a"], t["b"])
    if kernel == "linear":
        return lambda: torch.addmm(t["b"], t["x"], t["W"])
    if kernel == "linear_backward":
        x, W, dy = t["x"], t["W"], t["dy"]
        return lambda: (dy.mm(W.t()), x.t().mm(dy), dy.sum(0))
    params = []
    for p, g in zip(inp["params"], inp["grads"]):
        tp = torch.from_numpy(p.copy()).requires_grad_()
        tp.grad = torch.from_numpy(g)
        params.append(tp)
    return torch.optim.Adam(params, lr=1e-3).step


def jax_kernel(jax, kernel, inp):
    jnp = jax.numpy
    d = {k: jax.device_put(v.astype(np.int32) if v.dtype == np.int64 else v)
         for k, v in inp.items() if isinstance(v, np.ndarray)}

    def nll(x, t):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(x, axis=-1), t[:, None], axis=1))
    unary = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh,
             "softmax": lambda x: jax.nn.softmax(x, axis=-1), "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1)}
    if kernel in unary:
        fn, args = jax.jit(unary[kernel]), (d["x"],)
    elif kernel == "cross_entropy":
        fn, args = jax.jit(nll), (d["x"], d["t"])
    elif kernel == "softmax_cross_entropy":
        fn, args = jax.jit(jax.value_and_grad(nll)), (d["x"], d["t"])
    elif kernel == "matmul":
        fn, args = jax.jit(jnp.matmul), (d["a"], d["b"])
    elif kernel == "linear":
        fn, args = jax.jit(lambda x, W, b: x @ W + b), (d["x"], d["W"], d["b"])
    elif kernel == "linear_backward":
        fn, args = jax.jit(lambda x, W, dy: (dy @ W.T, x.T @ dy, dy.sum(0))), (d["x"], d["W"], d["dy"])
    else:
        def adam(params, grads, m, v):
            m = [0.9 * a + 0.1 * g for a, g in zip(m, grads)]
            v = [0.999 * a + 0.001 * g * g for a, g in zip(v, grads)]
            scale = 1e-3 * math.sqrt(1 - 0.999 ** 10) / (1 - 0.9 ** 10)
            return [p - scale * a / (jnp.sqrt(b) + 1e-8) for p, a, b in zip(params, m, v)], m, v
        params = [jax.device_put(p) for p in inp["params"]]
        grads = [jax.device_put(g) for g in inp["grads"]]
        zeros = [jnp.zeros_like(p) for p in params]
        fn, args = jax.jit(adam), (params, grads, zeros, zeros)
    return lambda: jax.block_until_ready(fn(*args))


def _as_numpy(value):
    if isinstance(value, (tuple, list)):
        return [_as_numpy(v) for v in value]
    if hasattr(value, "detach"):  # a torch tensor, perhaps bfloat16, which NumPy has no type for
        value = value.detach().float().numpy()
    return np.asarray(value, dtype=np.float64)


def agrees(got, want, tolerance=2e-3):
    """Results equal up to `tolerance` (float32 rounding by default), relative to the result's scale."""
    got, want = _as_numpy(got), _as_numpy(want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(agrees(g, w, tolerance)
                                                                        for g, w in zip(got, want))
    if got.shape != want.shape:
        return False
    scale = float(np.max(np.abs(want))) if want.size else 1.0
    return bool(np.allclose(got, want, rtol=tolerance, atol=tolerance * max(scale, 1e-3)))


class TimedKernel:
    """A kernel prepared for sampling: warmed up, then sized to `inner` calls per sample."""

    def __init__(self, fn, min_time, warmup=2):
        self.fn = fn
        for _ in range(warmup):
            self.result = fn()
        single = float("inf")
        for _ in range(3):  # the time of one warm call, to size the samples
            t = time.perf_counter()
            fn()
            single = min(single, time.perf_counter() - t)
            if single > min_time:
                break
        self.inner = max(1, min(int(min_time / max(single, 1e-7)), 1_000_000))

    def sample(self):
        """Mean seconds per call over `inner` back-to-back calls, after one untimed call
        that wakes the framework's threads, as in a training loop."""
        fn, inner = self.fn, self.inner
        enabled = gc.isenabled()
        gc.disable()
        try:
            fn()
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            return (time.perf_counter() - t) / inner
        finally:
            if enabled:
                gc.enable()


# ==================================================================== training

class Trainer:
    """One framework's MNIST loop: warmup(), epoch() -> seconds, accuracy(x, y)."""

    def __init__(self, x, y, weights, seed, recipe):
        self.x, self.y, self.weights, self.seed, self.recipe = x, y, weights, seed, recipe
        self.rng = np.random.default_rng(seed)  # the permutations fastnn's Trainer draws
        self.batch = recipe["batch_size"]
        self.steps_per_epoch = -(-x.shape[0] // self.batch)

    def warmup(self):
        """Train a throwaway copy on a few batches (JIT, thread pools, allocators)."""
        n = min(self.x.shape[0], 20 * self.batch + self.x.shape[0] % self.batch)
        spare = type(self)(self.x[:n], self.y[:n], self.weights, self.seed + 1,
                           dict(self.recipe, schedule="none"), **self._options())
        spare.epoch()

    def _options(self):
        return {}


class FastnnTrainer(Trainer):
    def __init__(self, x, y, weights, seed, recipe):
        super().__init__(x, y, weights, seed, recipe)
        from .. import nn
        from ..recipe import make_optimizer, make_scheduler
        from ..train import Trainer as FitLoop
        if recipe["dropout"] or recipe["activation"] != "relu":
            raise NotImplementedError("the bench builds ReLU MLPs without dropout")
        sizes = [w.shape[0] for w, _ in weights] + [weights[-1][0].shape[1]]
        self.model = nn.MLP(sizes, "relu", seed=seed)
        linears = [layer for layer in self.model.layers if isinstance(layer, nn.Linear)]
        for layer, (W, b) in zip(linears, weights):
            layer.weight.data[...] = W
            layer.bias.data[...] = b
        opt = make_optimizer(recipe["optimizer"], self.model.parameters(), recipe["lr"])
        sched = make_scheduler(recipe["schedule"], opt, recipe["lr"], recipe["epochs"], self.steps_per_epoch)
        self.loop = FitLoop(self.model, nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"]), opt, sched,
                            batch_size=self.batch, epochs=0, seed=seed, verbose=False, progress=False)

    def epoch(self):
        self.loop.epochs += 1
        t = time.perf_counter()
        self.loop.fit(self.x, self.y)
        return time.perf_counter() - t

    def accuracy(self, x, y):
        return float(self.loop.evaluate(x, y)[1])


class TextbookTrainer(Trainer):
    def __init__(self, x, y, weights, seed, recipe):
        super().__init__(x, y, weights, seed, recipe)
        self.schedule = _schedule(recipe, self.steps_per_epoch)
        self.net = ref.TextbookMLP(weights, recipe["label_smoothing"])
        self.opt = ref.Adam(lr=recipe["lr"])

    def epoch(self):
        order = self.rng.permutation(self.x.shape[0])
        t = time.perf_counter()
        ref.train_epoch(self.net, self.opt, self.x, self.y, order, self.batch,
                        None if self.schedule is None else self.schedule.__next__)
        return time.perf_counter() - t

    def accuracy(self, x, y):
        return self.net.accuracy(x, y)


class TorchTrainer(Trainer):
    """nn.Sequential(Linear, ReLU, ...), torch.optim.Adam, CrossEntropyLoss, float32."""

    def __init__(self, x, y, weights, seed, recipe):
        super().__init__(x, y, weights, seed, recipe)
        import torch
        _schedule(recipe, self.steps_per_epoch)  # refuses recipes the loop below does not implement
        self.torch = torch
        self.tx, self.ty = torch.from_numpy(x), torch.from_numpy(y)
        layers = []
        for i, (W, b) in enumerate(weights):
            lin = torch.nn.Linear(W.shape[0], W.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                lin.bias.copy_(torch.from_numpy(b))
            layers += [lin] + ([torch.nn.ReLU()] if i < len(weights) - 1 else [])
        self.model = torch.nn.Sequential(*layers)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=recipe["lr"])
        self.sched = None
        if recipe["schedule"] == "onecycle":
            self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=recipe["lr"], epochs=recipe["epochs"],
                                                             steps_per_epoch=self.steps_per_epoch)
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])

    def epoch(self):
        order = self.torch.from_numpy(self.rng.permutation(self.x.shape[0]))
        t = time.perf_counter()
        for s in range(0, order.shape[0], self.batch):
            idx = order[s:s + self.batch]
            xb, yb = self.tx[idx], self.ty[idx]
            self.opt.zero_grad()
            loss = self.loss(self.model(xb), yb)
            loss.backward()
            self.opt.step()
            if self.sched is not None:
                self.sched.step()
            loss.item()
        return time.perf_counter() - t

    def accuracy(self, x, y):
        with self.torch.no_grad():
            pred = self.model(self.torch.from_numpy(x)).argmax(dim=1).numpy()
        return float(np.mean(pred == y))


_JAX_FUNCTIONS = {}


def jax_functions(jax, label_smoothing):
    """(step, scan_epoch, tail_step) compiled once per process and label smoothing, so that
    the warm-up compiles exactly what the timed epochs then call."""
    if label_smoothing in _JAX_FUNCTIONS:
        return _JAX_FUNCTIONS[label_smoothing]
    jnp, tree_map = jax.numpy, jax.tree_util.tree_map

    def loss_fn(params, xb, yb):
        h = xb
        for W, b in params[:-1]:
            h = jax.nn.relu(h @ W + b)
        W, b = params[-1]
        logp = jax.nn.log_softmax(h @ W + b, axis=-1)
        nll = -jnp.take_along_axis(logp, yb[:, None], axis=1)[:, 0]
        return jnp.mean((1 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=1))

    def step(state, xb, yb, lr, beta1):  # torch.optim.Adam's update, eps 1e-8, beta2 0.999
        params, m, v, t = state
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        t = t + 1
        m = tree_map(lambda a, g: beta1 * a + (1 - beta1) * g, m, grads)
        v = tree_map(lambda a, g: 0.999 * a + 0.001 * g * g, v, grads)
        c1, c2 = 1 - beta1 ** t, 1 - 0.999 ** t
        params = tree_map(lambda p, a, b: p - lr / c1 * a / (jnp.sqrt(b) / jnp.sqrt(c2) + 1e-8), params, m, v)
        return (params, m, v, t), loss

    def scan_epoch(state, x, y, batches, lrs, beta1s):
        def body(state, inputs):
            idx, lr, b1 = inputs
            return step(state, x[idx], y[idx], lr, b1)
        return jax.lax.scan(body, state, (batches, lrs, beta1s))

    def tail_step(state, x, y, idx, lr, beta1):
        return step(state, x[idx], y[idx], lr, beta1)
    _JAX_FUNCTIONS[label_smoothing] = tuple(jax.jit(f, donate_argnums=0) for f in (step, scan_epoch, tail_step))
    return _JAX_FUNCTIONS[label_smoothing]


class JaxTrainer(Trainer):
    """A hand-written MLP + Adam in JAX, in one of two idioms:
    'jit': the whole step under jax.jit, each batch gathered in NumPy;
    'scan': the epoch as one jax.jit with lax.scan over the batches, the data on the device."""

    def __init__(self, x, y, weights, seed, recipe, idiom):
        super().__init__(x, y, weights, seed, recipe)
        import jax
        self.jax, self.jnp, self.idiom = jax, jax.numpy, idiom
        self.schedule = _schedule(recipe, self.steps_per_epoch)
        params = [(jax.device_put(W), jax.device_put(b)) for W, b in weights]
        m, v = (jax.tree_util.tree_map(self.jnp.zeros_like, params) for _ in range(2))  # donated: no shared buffers
        self.state = (params, m, v, self.jnp.zeros((), self.jnp.float32))
        self.step, self.scan_epoch, self.tail_step = jax_functions(jax, float(recipe["label_smoothing"]))
        if idiom == "scan":
            self.x_dev, self.y_dev = jax.device_put(x), jax.device_put(y.astype(np.int32))

    def _options(self):
        return {"idiom": self.idiom}

    def warmup(self):
        if self.idiom == "scan":  # compiled for the epoch's own shapes: a full epoch of a throwaway copy
            spare = JaxTrainer(self.x, self.y, self.weights, self.seed + 1, dict(self.recipe, schedule="none"),
                               "scan")
            spare.epoch()
        else:
            super().warmup()

    def _rates(self):
        if self.schedule is None:
            return [(self.recipe["lr"], 0.9)] * self.steps_per_epoch
        return [next(self.schedule) for _ in range(self.steps_per_epoch)]

    def epoch(self):
        order = self.rng.permutation(self.x.shape[0])
        rates = self._rates()
        t = time.perf_counter()
        if self.idiom == "scan":
            full = self.x.shape[0] // self.batch * self.batch
            lrs = np.array([r[0] for r in rates], F32)
            b1s = np.array([r[1] for r in rates], F32)
            batches = order[:full].reshape(-1, self.batch).astype(np.int32)
            nb = batches.shape[0]
            self.state, _ = self.scan_epoch(self.state, self.x_dev, self.y_dev, batches, lrs[:nb], b1s[:nb])
            if full < order.shape[0]:
                self.state, _ = self.tail_step(self.state, self.x_dev, self.y_dev, order[full:].astype(np.int32),
                                               lrs[nb], b1s[nb])
        else:
            for k, s in enumerate(range(0, order.shape[0], self.batch)):
                idx = order[s:s + self.batch]
                self.state, _ = self.step(self.state, self.x[idx], self.y[idx].astype(np.int32), *rates[k])
        self.jax.block_until_ready(self.state)
        return time.perf_counter() - t

    def accuracy(self, x, y):
        params = self.state[0]
        h = self.jnp.asarray(x)
        for W, b in params[:-1]:
            h = self.jax.nn.relu(h @ W + b)
        pred = np.asarray((h @ params[-1][0] + params[-1][1]).argmax(axis=1))
        return float(np.mean(pred == y))


class SklearnTrainer(Trainer):
    """MLPClassifier (same layers, adam, batch, lr, alpha 0): one partial_fit per epoch on the
    epoch's shuffled rows (shuffle=False, so its batches are the others'); its own initial weights."""

    def __init__(self, x, y, weights, seed, recipe):
        super().__init__(x, y, weights, seed, recipe)
        from sklearn.neural_network import MLPClassifier
        if recipe["schedule"] != "none" or recipe["label_smoothing"]:
            raise NotImplementedError("MLPClassifier has no one-cycle schedule and no label smoothing")
        sizes = tuple(w.shape[1] for w, _ in weights[:-1])
        self.model = MLPClassifier(hidden_layer_sizes=sizes, activation="relu", solver="adam", batch_size=self.batch,
                                   learning_rate_init=recipe["lr"], max_iter=1, alpha=0.0, shuffle=False,
                                   random_state=seed)
        self.classes = np.arange(weights[-1][0].shape[1])

    def epoch(self):
        from sklearn.exceptions import ConvergenceWarning
        order = self.rng.permutation(self.x.shape[0])
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.partial_fit(self.x[order], self.y[order], classes=self.classes)
        return time.perf_counter() - t

    def accuracy(self, x, y):
        return float(self.model.score(x, y))


def time_to_accuracy(trainer, x_test, y_test, target, max_epochs):
    """Train epoch by epoch (timed), evaluating after each (not timed), until accuracy >= target."""
    seconds, curve = 0.0, []
    for epoch in range(1, max_epochs + 1):
        seconds += trainer.epoch()
        acc = float(trainer.accuracy(x_test, y_test))
        curve.append({"epoch": epoch, "train_seconds": seconds, "test_accuracy": acc})
        if acc >= target:
            return {"reached": True, "seconds": seconds, "epochs": epoch, "test_accuracy": acc, "curve": curve}
    return {"reached": False, "seconds": None, "epochs": max_epochs, "test_accuracy": curve[-1]["test_accuracy"],
            "train_seconds": seconds, "curve": curve}


# =================================================================== neighbour

def settle_self(max_wait):
    """Wait (at most max_wait s) until this process's threads have stopped spinning."""
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(0.01)
        if (time.process_time() - cpu) / (time.perf_counter() - wall) < 0.2:
            return


def busy_wait(seconds):
    """Keep this thread busy for `seconds`, touching no memory and no other thread."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def neighbour(rounds, calls):
    """A NumPy and a PyTorch op timed right after a fastnn kernel, against the same op
    called back to back with no fastnn call before it; blocks of each alternate. A third
    block times the op after a busy-wait as long as the kernel: what any work of that
    length costs the op (its own threads idle meanwhile), with no fastnn thread involved."""
    import statistics

    from .. import backends
    from .. import functional as F
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((128, 784), dtype=F32), rng.standard_normal((784, 256), dtype=F32)
    x = rng.standard_normal((256, 256), dtype=F32)
    ops = [("NumPy", "x @ x (256x256 float32)", lambda: x @ x)]
    try:
        import torch
        xt = torch.from_numpy(x)
        ops.append(("PyTorch", f"torch.mm(x, x) (256x256 float32, {torch.get_num_threads()} threads)",
                    lambda: torch.mm(xt, xt)))
    except ImportError:
        pass

    def kernel():
        F.matmul(a, b)
    rows = []
    for framework, what, op in ops:
        kernel_times = []
        for _ in range(20):
            op()
            t = time.perf_counter()
            kernel()
            kernel_times.append(time.perf_counter() - t)
        kernel_seconds = statistics.median(kernel_times)
        before = {"alone": None, "after": kernel, "pause": lambda: busy_wait(kernel_seconds)}
        medians = {mode: [] for mode in before}
        for r in range(rounds):
            for mode in (list(before) if r % 2 == 0 else list(before)[::-1]):
                settle_self(0.5)
                times = []
                for _ in range(calls):
                    if before[mode]:
                        before[mode]()
                    t = time.perf_counter()
                    op()
                    times.append(time.perf_counter() - t)
                medians[mode].append(statistics.median(times))
        alone = medians["alone"]
        rows.append({"framework": framework, "op": what,
                     "after": f"fastnn F.matmul 128x784 @ 784x256 ({backends.active().NAME} backend)",
                     "alone_seconds": statistics.median(alone),
                     "after_fastnn_seconds": statistics.median(medians["after"]),
                     "slowdown": statistics.median([s / a for a, s in zip(alone, medians["after"])]),
                     "pause_seconds": kernel_seconds,
                     "after_pause_seconds": statistics.median(medians["pause"]),
                     "pause_slowdown": statistics.median([s / a for a, s in zip(alone, medians["pause"])]),
                     "rounds": rounds, "calls_per_round": calls})
    return rows
