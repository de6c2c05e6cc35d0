"""Optimizers compared: SGD, Momentum, AdaGrad, RMSprop and Adam, as in the lesson on updates.
Look at: fastnn's point after 30 steps on f(x, y) = x^2/20 + y^2 from (-7, 2) beside the
lesson's update rule in NumPy; in optimizers.png each path and their MNIST loss curves."""
import argparse
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fastnn import nn, optim
from fastnn.datasets import load_mnist

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
parser.add_argument("--quick", action="store_true", help="300 MNIST steps instead of the lesson's 2000")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)


def lesson_rule(name, lr, p, g, s):
    """The lesson's update of p by gradient g, in place; s holds its state."""
    s["t"], m, v, h = s.get("t", 0) + 1, s.get("m", 0), s.get("v", 0), s.get("h", 0)
    if name == "SGD":
        p -= lr * g
    elif name == "Momentum":
        s["v"] = 0.9 * v - lr * g
        p += s["v"]
    elif name in ("AdaGrad", "RMSprop"):
        s["h"] = h + g * g if name == "AdaGrad" else 0.99 * h + 0.01 * g * g
        p -= lr * g / (np.sqrt(s["h"]) + 1e-7)
    else:  # Adam
        s["m"], s["v"] = m + 0.1 * (g - m), v + 0.001 * (g * g - v)
        p -= lr * np.sqrt(1 - 0.999 ** s["t"]) / (1 - 0.9 ** s["t"]) * s["m"] / (np.sqrt(s["v"]) + 1e-7)


def make(name, params, lr):  # fastnn's are torch's rules: they differ from the lesson's in eps only
    if name in ("SGD", "Momentum"):
        return optim.SGD(params, lr=lr, momentum=0.9 if name == "Momentum" else 0.0)
    return {"AdaGrad": optim.Adagrad, "RMSprop": optim.RMSprop, "Adam": optim.Adam}[name](params, lr=lr)


fig = plt.figure(figsize=(15, 7.5))
grid = fig.add_gridspec(2, 5)
X, Y = np.meshgrid(np.linspace(-10, 10, 200), np.linspace(-5, 5, 100))
for k, (name, lr) in enumerate({"SGD": 0.95, "Momentum": 0.1, "AdaGrad": 1.5, "RMSprop": 0.1, "Adam": 0.3}.items()):
    point, reference, state = nn.Parameter(np.array([-7.0, 2.0])), np.array([-7.0, 2.0]), {}
    opt, path = make(name, [point], lr), [point.data.copy()]
    for _ in range(30):
        point.grad = np.array([point.data[0] / 10, 2 * point.data[1]])  # grad of x^2/20 + y^2
        opt.step()
        lesson_rule(name, lr, reference, np.array([reference[0] / 10, 2 * reference[1]]), state)
        path.append(point.data.copy())
    for i, axis in enumerate("xy"):
        label = f"{name}, {axis} after 30 steps (lr {lr})"
        print(f"{label:<44} lesson {reference[i]:<8.6g} fastnn {point.data[i]:.6g}")
    ax = fig.add_subplot(grid[0, k])
    ax.contour(X, Y, X ** 2 / 20 + Y ** 2, levels=np.logspace(-1, 1.5, 10), colors="0.7", linewidths=0.8)
    ax.plot(*np.array(path).T, "o-", color="C3", ms=3)
    ax.plot(0, 0, "+", color="k", ms=10)
    ax.set(title=f"{name}, lr {lr}", xlabel="x (unitless)", ylabel="y (unitless)", xlim=(-10, 10), ylim=(-5, 5))

# MNIST: a 5-layer, 100-unit ReLU net, batch 128, the same random batches for each optimizer.
(x_train, t_train), _ = load_mnist()
batches = np.random.default_rng(0).choice(60000, (300 if args.quick else 2000, 128))
loss, ax = nn.CrossEntropyLoss(), fig.add_subplot(grid[1, :])
for name, lr in {"SGD": 0.01, "Momentum": 0.01, "AdaGrad": 0.01, "RMSprop": 0.001, "Adam": 0.001}.items():
    model = nn.MLP([784, 100, 100, 100, 100, 10], activation="relu", seed=0)
    opt, curve = make(name, model.parameters(), lr), []
    for idx in batches:
        curve.append(loss(model(x_train[idx]), t_train[idx]))
        model.backward(loss.backward(), need_input_grad=False)
        opt.step()
    print(f"{name + ', MNIST loss of the last 100 steps':<44} lesson {'highest' if name == 'SGD' else '< SGD':<8} "
          f"fastnn {np.mean(curve[-100:]):.6g}")
    ax.plot(np.arange(50, len(curve) + 1), np.convolve(curve, np.ones(50) / 50, mode="valid"), label=f"{name}, lr {lr}")
ax.set(title="MNIST, 784-100-100-100-100-10 ReLU, batch 128 (loss averaged over 50 steps)", xlabel="step",
       ylabel="training loss (cross-entropy, nats)", yscale="log")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(args.out / "optimizers.png", dpi=80)
print(f"figure: {args.out / 'optimizers.png'}")
