"""Activations and their derivatives, and why sigmoid's gradient vanishes in a deep net.
Look at: sigmoid' is at most 0.25, so each sigmoid layer shrinks the gradient going back;
in activations.png the 6-layer sigmoid net's first layer gets hundreds of times less than its last."""
import argparse
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fastnn import nn
from fastnn.datasets import load_mnist


def show(label, lesson, value):
    print(f"{label:<44} lesson {lesson:<8} fastnn {value:.6g}")


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)

fig, axes = plt.subplots(1, 3, figsize=(14, 4))
x = np.linspace(-4, 4, 161)  # includes 0
activations = {"sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "ReLU": nn.ReLU(),
               "LeakyReLU(0.1)": nn.LeakyReLU(0.1), "ELU": nn.ELU()}
for name, layer in activations.items():
    axes[0].plot(x, layer(x), label=name)
    derivative = layer.backward(np.ones_like(x))  # d f / d x at every x
    axes[1].plot(x, derivative, label=name)
    if name in ("sigmoid", "tanh"):
        lesson = "0.25" if name == "sigmoid" else "1"
        show(f"max of {name}'(x), at x = {x[derivative.argmax()]:g}", lesson, derivative.max())
axes[0].set(title="Activations f(x)", xlabel="pre-activation x (unitless)", ylabel="f(x) (unitless)", ylim=(-1.5, 4))
axes[1].set(title="Derivatives f'(x), from backward()", xlabel="pre-activation x (unitless)", ylabel="f'(x) (unitless)")

# One MNIST batch through 6 layers, at initialisation (Xavier for sigmoid, He for ReLU).
(x_train, t_train), _ = load_mnist()
batch, labels = x_train[:128], t_train[:128]
sizes = [784, 100, 100, 100, 100, 100, 10]
loss = nn.CrossEntropyLoss()
for name in ("sigmoid", "relu"):
    model = nn.MLP(sizes, activation=name, seed=0)
    loss.forward(model(batch), labels)
    model.backward(loss.backward())
    norms = [np.linalg.norm(layer.weight.grad) for layer in model.layers if isinstance(layer, nn.Linear)]
    print(f"{name:<8} gradient norm of each layer's weights:", "  ".join(f"{n:.2e}" for n in norms))
    show(f"{name}: layer 1 / layer 6 gradient norm", "<< 1" if name == "sigmoid" else "~ 1", norms[0] / norms[-1])
    axes[2].semilogy(range(1, 7), norms, "o-", label=f"6-layer {name} MLP")
axes[2].set(title="Gradient at initialisation, one MNIST batch of 128", xlabel="layer (1 = next to the input)",
            ylabel="||dL/dW|| (Frobenius norm, log scale)")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out / "activations.png", dpi=80)
print(f"figure: {out / 'activations.png'}")
