"""Mini-batches: np.random.choice(60000, 100) as the lesson samples, against fastnn's epoch shuffle.
Look at: the batch CEE over 100 images by the lesson's formula and by fastnn, how many images
each way of sampling visits per epoch, and in mini_batches.png the loss and test accuracy."""
import argparse
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import fastnn
import fastnn.functional as F
from fastnn import nn, optim
from fastnn.datasets import load_mnist


def show(label, lesson, value, source="fastnn"):
    print(f"{label:<46} lesson {lesson:<6} {source} {value:.6g}")


class Visits(nn.Module):
    """Passes its input through, noting which rows (column 0 holds the row id) it saw."""

    def __init__(self):
        self.rows = []

    def forward(self, x):
        self.rows.extend(x[:, 0])
        return x

    def backward(self, dout):
        return dout


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
parser.add_argument("--quick", action="store_true", help="3 epochs instead of the lesson's 10000 iterations")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
(x_train, t_train), (x_test, t_test) = load_mnist()
np.random.seed(0)

# The lesson's batch and its cross-entropy through an untrained 784-50-10 net.
batch_mask = np.random.choice(60000, 100)
y = F.softmax(nn.MLP([784, 50, 10], seed=0)(x_train[batch_mask])).astype(np.float64)
t_batch = np.eye(10)[t_train[batch_mask]]
show("batch CEE over 100 images, lesson's formula", "~2.3", -np.sum(t_batch * np.log(y + 1e-7)) / 100, "numpy")
show("batch CEE over 100 images, fastnn", "~2.3", F.cross_entropy_error(y, t_batch))

# One epoch's worth of batches: drawn with replacement, or a shuffle (fastnn.Trainer's).
drawn = np.concatenate([np.random.choice(60000, 100) for _ in range(600)])
show("share of images in 600 random batches (1 - 1/e)", "0.632", np.unique(drawn).size / 60000, "numpy")
visits, ids = Visits(), np.arange(60000, dtype=np.float32)[:, None]
recorder = nn.Sequential(visits, nn.Linear(1, 1))
fastnn.Trainer(recorder, nn.MSELoss(), optim.SGD(recorder.parameters(), lr=0.0), batch_size=100, epochs=1,
               verbose=False).fit(ids, np.zeros_like(ids))
show("share of images in one epoch of fastnn.Trainer", "1", np.unique(visits.rows).size / 60000)

# Train the lesson's way: SGD lr 0.1, random batches of 100, test accuracy every 600 steps.
iterations = 1800 if args.quick else 10000
model, loss = nn.MLP([784, 50, 10], seed=0), nn.CrossEntropyLoss()
opt, losses, accuracy = optim.SGD(model.parameters(), lr=0.1), [], []
for i in range(iterations):
    mask = np.random.choice(60000, 100)
    losses.append(loss(model(x_train[mask]), t_train[mask]))
    model.backward(loss.backward(), need_input_grad=False)
    opt.step()
    if (i + 1) % 600 == 0:
        accuracy.append(np.mean(model(x_test).argmax(axis=1) == t_test))
show(f"test accuracy after {iterations} steps", "~0.97" if iterations == 10000 else "> 0.93", accuracy[-1])

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
left.plot(np.arange(1, iterations + 1), losses, lw=0.5, label="one random batch of 100")
left.plot(np.arange(50, iterations + 1), np.convolve(losses, np.ones(50) / 50, "valid"), label="mean of 50 steps")
left.set(title="Training loss, 784-50-10 ReLU, SGD lr 0.1", xlabel="step (600 = one epoch-equivalent)",
         ylabel="cross-entropy (nats)", yscale="log")
left.legend()
right.plot(np.arange(1, len(accuracy) + 1), accuracy, "o-")
right.set(title="Test accuracy after each epoch-equivalent", xlabel="epoch-equivalent (600 steps)",
          ylabel="accuracy on the 10000 test images (fraction)")
for ax in (left, right):
    ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(args.out / "mini_batches.png", dpi=80)
print(f"figure: {args.out / 'mini_batches.png'}")
