"""The chain rule, by hand and by fastnn: one backprop step of a tiny sigmoid network.
Look at: dE/dw = dE/da * da/dz * dz/dw from the lesson's rounded numbers beside
backward()'s exact one, and one SGD(lr=0.5) step (chain_rule.png: E(w), its tangent)."""
import argparse
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import fastnn.functional as F
from fastnn import nn, optim


def show(label, lesson, value, source="fastnn"):
    print(f"{label:<44} lesson {lesson:<8} {source} {value:.6g}")


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)

# Two inputs, two hidden sigmoid units, one sigmoid output, no biases; w joins
# hidden unit a10 to the output. These weights give the lesson's a10 and a.
hidden, output = nn.Linear(2, 2, bias=False, dtype=np.float64), nn.Linear(2, 1, bias=False, dtype=np.float64)
hidden.weight.data[...] = [[0.05, 0.25], [0.70, 0.85]]
output.weight.data[...] = [[0.40], [0.45]]
sigmoid_hidden, sigmoid_out = nn.Sigmoid(), nn.Sigmoid()
x, t = np.array([[0.05, 0.10]]), np.array([[0.3]])


def forward():
    h = sigmoid_hidden(hidden(x))
    return h, sigmoid_out(output(h))


h, a = forward()
show("a10, hidden unit feeding w", "0.518", h[0, 0])
show("a, the output", "0.609", a[0, 0])

# Backward, one factor of the chain at a time: E = SSE = 1/2 (t - a)^2.
dE_da = F.sum_squared_error_backward(a, t)           # -(t - a)
dE_dz = sigmoid_out.backward(dE_da)                   # * a (1 - a)
hidden.backward(sigmoid_hidden.backward(output.backward(dE_dz)))  # and on to the first layer
dE_dw = output.weight.grad[0, 0]                      # dE/dz * a10
show("dE/da = -(t - a)", "0.309", dE_da[0, 0])
show("dE/dz = dE/da * a (1 - a)", "0.0736", dE_dz[0, 0])
by_hand = -(0.3 - 0.609) * 0.609 * (1 - 0.609) * 0.518
show("dE/dw by hand, from the rounded numbers", "0.0381", by_hand, "numpy")
show("dE/dw by backward()", "0.0381", dE_dw)

optim.SGD([hidden.weight, output.weight], lr=0.5).step()
# The lesson rounds w+ to 0.380; its text says lr 0.1 but computes with 0.5.
show("w+ = 0.4 - 0.5 * 0.0381 by hand", "0.381", 0.4 - 0.5 * by_hand, "numpy")
show("w+ after one optim.SGD(lr=0.5).step()", "0.381", output.weight.data[0, 0])

# E as a function of w alone (the rest fixed), its tangent at w = 0.4, and the step.
def error_at(w):
    output.weight.data[0, 0] = w
    return F.sum_squared_error(forward()[1], t)


w_new, e0 = output.weight.data[0, 0], error_at(0.4)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
for ax, ws in zip(axes, (np.linspace(-3, 3, 121), np.linspace(0.375, 0.405, 61))):
    ax.plot(ws, [error_at(w) for w in ws], label="$E(w) = \\frac{1}{2}(t - a)^2$")
    ax.plot(ws, e0 + dE_dw * (ws - 0.4), "--", label=f"tangent at w = 0.4, slope {dE_dw:.4f}")
    ax.plot([0.4, w_new], [e0, error_at(w_new)], "o-", color="C3", label=f"SGD step: w+ = {w_new:.4f}")
    ax.set(xlabel="weight w from $a_{10}$ to the output (unitless)", ylabel="error E (squared output units)")
    ax.grid(alpha=0.3)
axes[0].set_title("E(w), the other weights fixed (t = 0.3)")
axes[1].set_title("Zoomed in: one step of lr 0.5")
axes[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(out / "chain_rule.png", dpi=90)
print(f"figure: {out / 'chain_rule.png'}")
