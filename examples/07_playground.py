"""The playground: the lesson's TensorFlow Playground setting, offline, trained with fastnn.
Circle data (500 points, half for training), inputs x1 and x2, a 4-2 tanh network, lr 0.03,
batch 10. Look at: the test loss falling to near 0 and in playground.png the circle it draws."""
import argparse
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import fastnn.functional as F
from fastnn import nn, optim


def show(label, lesson, value):
    print(f"{label:<44} lesson {lesson:<8} fastnn {value:.6g}")


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
parser.add_argument("--epochs", type=int, default=300)
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

# The playground's circle: label +1 within radius 2.5 of the centre, -1 from 3.5 to 5.
rng = np.random.default_rng(0)
radius = np.concatenate([rng.uniform(0, 2.5, 250), rng.uniform(3.5, 5, 250)])
angle = rng.uniform(0, 2 * np.pi, 500)
points = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
labels = np.where(radius < 2.5, 1.0, -1.0)[:, None]
order = rng.permutation(500)
x_train, t_train, x_test, t_test = points[order[:250]], labels[order[:250]], points[order[250:]], labels[order[250:]]

# 2 inputs -> 4 tanh -> 2 tanh -> 1 tanh output; the playground's initial weights.
model = nn.Sequential(nn.Linear(2, 4, dtype=np.float64), nn.Tanh(), nn.Linear(4, 2, dtype=np.float64), nn.Tanh(),
                      nn.Linear(2, 1, dtype=np.float64), nn.Tanh())
for weight, bias in zip(*[iter(model.parameters())] * 2):
    weight.data[...] = rng.uniform(-0.5, 0.5, weight.data.shape)
    bias.data[...] = 0.1
opt = optim.SGD(model.parameters(), lr=0.03)


def playground_loss(x, t):  # the mean of 1/2 (output - label)^2, as the playground reports it
    return F.sum_squared_error(model(x), t) / len(x)


history = {"training": [playground_loss(x_train, t_train)], "test": [playground_loss(x_test, t_test)]}
for epoch in range(args.epochs):
    for start in range(0, 250, 10):  # the playground walks its training points in one fixed order
        xb, tb = x_train[start:start + 10], t_train[start:start + 10]
        model.backward(F.sum_squared_error_backward(model(xb), tb) / len(xb))
        opt.step()
    history["training"].append(playground_loss(x_train, t_train))
    history["test"].append(playground_loss(x_test, t_test))
show(f"training loss after {args.epochs} epochs", "~0", history["training"][-1])
show(f"test loss after {args.epochs} epochs", "~0", history["test"][-1])
show("test accuracy (sign of the output)", "1", np.mean(np.sign(model(x_test)) == t_test))

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.3))
grid = np.linspace(-6, 6, 121)
g1, g2 = np.meshgrid(grid, grid)
surface = model(np.stack([g1.ravel(), g2.ravel()], axis=1)).reshape(g1.shape)
shade = left.contourf(g1, g2, surface, levels=np.linspace(-1, 1, 21), cmap="RdBu", alpha=0.45)
left.contour(g1, g2, surface, levels=[0], colors="k", linewidths=1)
for x, t, marker, name in ((x_train, t_train, "o", "training"), (x_test, t_test, "^", "test")):
    left.scatter(*x.T, c=t[:, 0], cmap="RdBu", vmin=-1.2, vmax=1.2, marker=marker, s=14, edgecolors="k",
                 linewidths=0.3, label=f"{name} points")
fig.colorbar(shade, ax=left, label="network output (tanh, -1 to 1)")
left.set(title="Decision boundary (black: output 0)", xlabel="x1 (playground units)",
         ylabel="x2 (playground units)", aspect="equal")
left.legend(fontsize=8, loc="upper right")
for name, losses in history.items():
    right.plot(losses, label=f"{name} loss")
right.set(title="4-2 tanh, lr 0.03, batch 10", xlabel="epoch (25 batches of 10)",
          ylabel="loss, mean of 1/2 (output - label)^2", yscale="log")
right.legend()
right.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(args.out / "playground.png", dpi=80)
print(f"figure: {args.out / 'playground.png'}")
