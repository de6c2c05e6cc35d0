"""The textbook NumPy formulation that `fastnn bench` measures fastnn against.

This is the code a reader of "Deep Learning from Scratch" writes (its
common/functions.py, common/layers.py and common/optimizer.py), kept as plain
as the book has it -- float32, no tricks -- so that the benchmark's baseline
is the one people actually start from:

- kernels: the activations `relu`, `sigmoid`, `tanh`; `softmax`, `log_softmax`,
  `cross_entropy` (softmax, then the book's
  cross_entropy_error), `softmax_cross_entropy` (SoftmaxWithLoss forward +
  backward), `matmul`, `linear` (Affine forward) and `linear_backward` (Affine
  backward), `Adam` (the book's update, with bias correction);
- `TextbookMLP`: Affine / ReLU / ... / SoftmaxWithLoss layers trained with that
  Adam, for the end-to-end MNIST epoch; label smoothing and a per-step
  learning-rate schedule are the two additions the time-to-98% recipe needs.

Nothing here imports fastnn's kernels: it is the independent reference.
"""
from collections import OrderedDict

import numpy as np


# ----------------------------------------------------------------- functions

def relu(x):
    return np.maximum(0, x)


def sigmoid(x):
    """The book's sigmoid (common/functions.py)."""
    return 1 / (1 + np.exp(-x))


def tanh(x):
    return np.tanh(x)


def softmax(x):
    """The book's batch softmax (common/functions.py): stable, by the row max."""
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def log_softmax(x):
    """Stable log-softmax by log-sum-exp (the book has none; this is the usual NumPy form)."""
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def cross_entropy_error(y, t):
    """The book's cross-entropy on probabilities y, labels or one-hot t."""
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


def cross_entropy(logits, t):
    """Loss only, from logits: softmax, then cross_entropy_error."""
    return cross_entropy_error(softmax(logits), t)


def softmax_cross_entropy(logits, t):
    """SoftmaxWithLoss forward + backward: (loss, dlogits) for integer labels t."""
    y = softmax(logits)
    loss = cross_entropy_error(y, t)
    batch_size = t.shape[0]
    dx = y.copy()
    dx[np.arange(batch_size), t] -= 1
    dx = dx / batch_size
    return loss, dx


def matmul(a, b):
    return np.dot(a, b)


def linear(x, W, b):
    """Affine.forward: x @ W + b with W (in, out)."""
    return np.dot(x, W) + b


def linear_backward(x, W, dout):
    """Affine.backward: (dx, dW, db) = (dout @ W.T, x.T @ dout, dout.sum(0))."""
    dx = np.dot(dout, W.T)
    dW = np.dot(x.T, dout)
    db = np.sum(dout, axis=0)
    return dx, dW, db


# -------------------------------------------------------------------- layers

class Affine:
    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.x = x
        return np.dot(x, self.W) + self.b

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = (x <= 0)
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class SoftmaxWithLoss:
    """The book's layer; with label_smoothing e the target is (1 - e) * one-hot + e / classes."""

    def __init__(self, label_smoothing=0.0):
        self.loss = None
        self.y = None
        self.t = None
        self.label_smoothing = label_smoothing

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        if self.label_smoothing:
            uniform = -np.sum(np.log(self.y + 1e-7)) / (self.y.shape[0] * self.y.shape[1])
            self.loss = (1 - self.label_smoothing) * self.loss + self.label_smoothing * uniform
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1 - self.label_smoothing
        if self.label_smoothing:
            dx -= self.label_smoothing / self.y.shape[1]
        return dx * dout / batch_size


class Adam:
    """The book's Adam (common/optimizer.py), with bias correction folded into lr_t."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m, self.v = {}, {}
            for key, val in params.items():
                self.m[key] = np.zeros_like(val)
                self.v[key] = np.zeros_like(val)
        self.iter += 1
        # float(): a Python scalar keeps the update in float32 under NumPy 2's
        # promotion rules, as it was under NumPy 1 when the book was written.
        lr_t = float(self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter))
        for key in params.keys():
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


class TextbookMLP:
    """The book's MultiLayerNet: Affine-ReLU-...-Affine-SoftmaxWithLoss.

    `weights` is a list of (W, b) per layer, W of shape (in, out) (the same
    layout as fastnn's Linear); arrays are copied, float32.
    """

    def __init__(self, weights, label_smoothing=0.0):
        self.params = {}
        self.layers = OrderedDict()
        n = len(weights)
        for i, (W, b) in enumerate(weights, start=1):
            self.params[f"W{i}"] = np.array(W, dtype=np.float32)
            self.params[f"b{i}"] = np.array(b, dtype=np.float32)
            self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            if i < n:
                self.layers[f"Relu{i}"] = Relu()
        self.last_layer = SoftmaxWithLoss(label_smoothing)
        self.n_affine = n

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x, t, batch=4096):
        correct = 0
        for s in range(0, x.shape[0], batch):
            correct += int(np.sum(self.predict(x[s:s + batch]).argmax(axis=1) == t[s:s + batch]))
        return correct / x.shape[0]

    def gradient(self, x, t):
        loss = self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for i in range(1, self.n_affine + 1):
            grads[f"W{i}"] = self.layers[f"Affine{i}"].dW
            grads[f"b{i}"] = self.layers[f"Affine{i}"].db
        return loss, grads


def train_epoch(net, optimizer, x, t, order, batch_size, schedule=None):
    """One epoch of the book's loop over the batches given by `order` (a permutation);
    schedule(), if given, returns the (lr, beta1) of each step in turn."""
    for start in range(0, x.shape[0], batch_size):
        idx = order[start:start + batch_size]
        if schedule is not None:
            optimizer.lr, optimizer.beta1 = schedule()
        _, grads = net.gradient(x[idx], t[idx])
        optimizer.update(net.params, grads)
