"""Loss functions: sum of squared errors, cross-entropy, binary cross-entropy.
Look at: each lesson number beside fastnn's, and how -log y punishes a confident
wrong answer (the curve in loss_functions.png)."""
import argparse
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import fastnn.functional as F


def show(label, lesson, value):
    print(f"{label:<44} lesson {lesson:<8} fastnn {value:.6g}")


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)

# The ten-class example: the answer is class 2; y is the network's softmax output.
t = np.eye(10)[2]
y_right = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
y_wrong = np.array([0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0])
show("SSE, 0.6 on the right class", "0.0975", F.sum_squared_error(y_right, t))
show("SSE, 0.6 on a wrong class", "0.5975", F.sum_squared_error(y_wrong, t))
show("CEE, 0.6 on the right class", "0.5108", F.cross_entropy_error(y_right, t))
show("CEE, 0.6 on a wrong class", "2.3026", F.cross_entropy_error(y_wrong, t))

# The "mse" that halves the sum is SSE; the mean is MSE.
y, t5 = [1, 3, 5, 6, 7], [3, 2, 7, 5, 8]
show("1/2 sum (y - t)^2", "5.5", F.sum_squared_error(y, t5))
show("mean (y - t)^2", "2.2", F.mean_squared_error(y, t5))

# A batch of three, one-hot labels 0, 1, 2; then the first prediction improved.
one_hot, labels = np.eye(3), np.array([0, 1, 2])
batches = {"batch": [[0.3, 0.1, 0.6], [0.3, 0.5, 0.2], [0.4, 0.1, 0.5]],
           "better batch": [[0.6, 0.1, 0.3], [0.3, 0.5, 0.2], [0.4, 0.1, 0.5]]}
lessons = {"batch": ("1.2040", "0.6931", "0.6931", "0.8634"), "better batch": ("0.5108", "0.6931", "0.6931", "0.6324")}
for name, batch in batches.items():
    *each, mean = lessons[name]
    for i in range(3):
        show(f"CEE, {name}, sample {i}", each[i], F.cross_entropy_error(batch[i], one_hot[i]))
    show(f"CEE, {name}, mean (one-hot labels)", mean, F.cross_entropy_error(batch, one_hot))
    show(f"CEE, {name}, mean (integer labels)", mean, F.cross_entropy_error(batch, labels))

p, t6 = np.array([0.5, 0.7, 0.3, 0.2, 0.7, 0.9]), np.array([0, 1, 0, 0, 1, 1.0])
show("binary CE", "0.3486", F.binary_cross_entropy(p, t6))

# -log of the probability given to the right class: two classes, the right one first.
show("-log(0.9)", "0.105", F.cross_entropy_error([0.9, 0.1], 0))
show("-log(0.6)", "0.51", F.cross_entropy_error([0.6, 0.4], 0))

x = np.linspace(0.005, 1, 400)
marked = np.array([0.9, 0.6, 0.5, 0.3, 0.1])
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(x, [F.cross_entropy_error([v, 1 - v], 0) for v in x], label="cross-entropy $-\\log y_k$")
ax.plot(x, [F.sum_squared_error([v, 1 - v], [1, 0]) for v in x], "--", label="SSE, two classes")
for v in marked:
    e = F.cross_entropy_error([v, 1 - v], 0)
    ax.plot(v, e, "o", color="C3")
    ax.annotate(f"$-\\log {v:g} = {e:.3f}$", (v, e), textcoords="offset points",
                xytext=(10, -4) if v == 0.6 else (6, 6))
ax.set(title="Loss for the probability $y_k$ given to the right class", xlim=(0, 1.05), ylim=(0, 5),
       xlabel="$y_k$, probability of the right class (0 to 1)", ylabel="loss (nats)")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out / "loss_functions.png", dpi=90)
print(f"figure: {out / 'loss_functions.png'}")
