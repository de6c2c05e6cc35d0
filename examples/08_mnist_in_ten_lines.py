"""MNIST in ten lines: the README's example, reaching 98% test accuracy in two epochs.
A 784-256-128-10 ReLU MLP, Adam on a one-cycle schedule, label smoothing 0.1, batch 128.
Look at: the test accuracy (>= 0.98), and in mnist.png which digits it still confuses."""
import argparse
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

# ---- the ten lines of the README's Usage
import fastnn
from fastnn import nn, optim
from fastnn.datasets import load_mnist

(x_train, t_train), (x_test, t_test) = load_mnist()          # float32 (N, 784), int64 labels
model = nn.MLP([784, 256, 128, 10], activation="relu")
opt = optim.Adam(model.parameters(), lr=1e-2)
schedule = optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, epochs=2, steps_per_epoch=469)  # 469 batches of 128
trainer = fastnn.Trainer(model, nn.CrossEntropyLoss(label_smoothing=0.1), opt, schedule, batch_size=128, epochs=2)
history = trainer.fit(x_train, t_train, validation_data=(x_test, t_test))
print(history["val_accuracy"][-1], fastnn.info())              # >= 0.98 after two epochs
# ----

accuracy = history["val_accuracy"][-1]
print(f"{'test accuracy after 2 epochs':<44} lesson {'>= 0.98':<8} fastnn {accuracy:.6g}")
predicted = trainer.predict(x_test).argmax(axis=1)
confusion = np.zeros((10, 10), dtype=np.int64)
np.add.at(confusion, (t_test, predicted), 1)
np.fill_diagonal(confusion, 0)
fig, ax = plt.subplots(figsize=(5.5, 4.6))
image = ax.imshow(confusion, cmap="Reds")
for (i, j), count in np.ndenumerate(confusion):
    if count:
        ax.text(j, i, count, ha="center", va="center", fontsize=7, color="w" if 2 * count > confusion.max() else "k")
fig.colorbar(image, ax=ax, label="test images (count)")
ax.set(title=f"The {confusion.sum()} mistakes among 10000 test digits ({accuracy:.2%} right)",
       xlabel="predicted digit", ylabel="true digit", xticks=range(10), yticks=range(10))
fig.tight_layout()
fig.savefig(args.out / "mnist.png", dpi=90)
print(f"figure: {args.out / 'mnist.png'}")
