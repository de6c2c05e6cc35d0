"""Gradient check: the numerical gradient (central differences, float64) against backprop.
Look at: the mean |numerical - backprop| of every parameter of a 784-50-10 network,
about 1e-10, and in gradient_check.png how that error depends on the step eps."""
import argparse
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import fastnn
from fastnn import nn
from fastnn.datasets import load_mnist


def show(label, lesson, value):
    print(f"{label:<44} lesson {lesson:<8} fastnn {value:.6g}")


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)

# Three images are too little work to share between threads: one thread is quicker.
fastnn.set_num_threads(1)
(x_train, t_train), _ = load_mnist()
x, t = x_train[:3].astype(np.float64), t_train[:3]
model = nn.MLP([784, 50, 10], activation="relu", seed=0, dtype=np.float64)
loss = nn.CrossEntropyLoss()

# 2 x 39760 forward passes, one per perturbed parameter element and sign.
differences = fastnn.gradcheck(model, loss, x, t)
for name, difference in differences.items():
    show(f"mean |numerical - backprop|, {name}", "~1e-10", difference)
params = dict(model.named_parameters())
magnitudes = {name: float(np.mean(np.abs(p.grad))) for name, p in params.items()}

# The step eps: too large and the difference quotient's curvature error shows,
# too small and the loss's rounding error divided by 2 eps does.
W2 = params["2.weight"]
steps = np.logspace(-12, -1, 12)
errors = [np.mean(np.abs(fastnn.numerical_gradient(lambda w: loss(model(x), t), W2.data, eps) - W2.grad))
          for eps in steps]
print("2.weight, mean |numerical - backprop| by eps:", "  ".join(f"{e:.0e}: {d:.1e}" for e, d in zip(steps, errors)))

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
names = list(differences)
positions = np.arange(len(names))
axes[0].bar(positions - 0.2, [magnitudes[n] for n in names], 0.4, label="mean |backprop gradient|")
axes[0].bar(positions + 0.2, [differences[n] for n in names], 0.4, label="mean |numerical - backprop|")
axes[0].set_xticks(positions, names)
axes[0].set_yscale("log")
axes[0].set_ylim(1e-12, 1e3)
axes[0].set(title="784-50-10 ReLU net, 3 MNIST images, eps = 1e-6", xlabel="parameter",
            ylabel="dL/dparameter (nats per unit, log scale)")
axes[1].loglog(steps, errors, "o-")
axes[1].axvline(1e-6, color="gray", ls="--", label="gradcheck's default eps = 1e-6")
axes[1].axvline(1e-4, color="gray", ls=":", label="the textbook's h = 1e-4")
axes[1].set(title="Error of the central difference, 2.weight", xlabel="step eps (parameter units)",
            ylabel="mean |numerical - backprop| (nats per unit)")
for ax in axes:
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out / "gradient_check.png", dpi=80)
print(f"figure: {out / 'gradient_check.png'}")
