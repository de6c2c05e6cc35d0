"""The bench's charts: `python -m fastnn.bench.charts OUT` draws kernels.png and epoch.png
from OUT/results.json (in a process of its own: matplotlib imports NumPy)."""
import json
import os
import sys

from . import cases
from .report import KERNEL_COLUMNS, kernel_cases

def plot_kernels(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = kernel_cases(res)
    cols = [(c, t) for c, t in KERNEL_COLUMNS if any(c in r[2] for r in rows)]
    colors = {"fastnn-numpy": "#9e9e9e", "fastnn-numba": "#f2a93b", "fastnn-cpp": "#2b7bba", "PyTorch": "#d9534f",
              "JAX": "#5cb85c", cases.MEDIUM: "#7fb3e0", "PyTorch bf16": "#eea29f"}
    targets = {(k, s): g for k, s, g, _ in cases.KERNEL_TARGETS}
    height = 0.8 / max(len(cols), 1)
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.5 * len(rows)))
    ys = list(range(len(rows)))[::-1]
    for j, (c, title) in enumerate(cols):
        vals = [r[2].get(c, {}).get("ratio_vs_textbook") or float("nan") for r in rows]
        ax.barh([y + 0.4 - height * (j + 0.5) for y in ys], vals, height=height, color=colors.get(c), label=title)
    first = True
    for y, (kernel, shape, _) in zip(ys, rows):
        goal = targets.get((kernel, shape))
        if goal:
            ax.plot([goal, goal], [y - 0.45, y + 0.45], color="black", lw=2, zorder=3, label="target" if first else None)
            first = False
    ax.axvline(1.0, color="black", lw=0.8, ls="--", label="textbook NumPy (= 1x)")
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{k}  {s}" for k, s, _ in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("speed-up over the textbook NumPy code (x, log scale; higher is faster)")
    fig.suptitle(f"Kernels (float32 arrays; bf16: matmul inputs rounded) — {res['machine']['cpu']}, {res['threads']} threads, {res['date']} "
                 f"({res['mode']} run)", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=7, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_epochs(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for ax, rows, title in ((axes[0], res["mnist_epoch"], "One MNIST epoch (seconds, lower is better)"),
                            (axes[1], res["time_to_98"], "Training seconds to 98% test accuracy")):
        rows = [r for r in rows if r.get("seconds")][::-1]
        if not rows:
            ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
        else:
            names = [f"{r['framework']} ({r['config']})"[:60] for r in rows]
            secs = [r["seconds"] for r in rows]
            ax.barh(names, secs, color=["#2b7bba" if r["framework"] == "fastnn" else "#9e9e9e" for r in rows])
            for i, v in enumerate(secs):
                ax.text(v, i, f" {v:.2f} s", va="center", fontsize=8)
            ax.set_xlim(0, max(secs) * 1.3)
            ax.tick_params(axis="y", labelsize=7)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"fastnn and other frameworks, each in its own process — {res['machine']['cpu']}, {res['date']} "
                 f"({res['mode']} run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    out_dir = sys.argv[1]
    with open(os.path.join(out_dir, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    plot_kernels(results, os.path.join(out_dir, "kernels.png"))
    plot_epochs(results, os.path.join(out_dir, "epoch.png"))
