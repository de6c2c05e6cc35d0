"""Every script in examples/ runs, prints the lesson's numbers and draws its figure.

Each script prints lines `<label>  lesson <lesson's value>  fastnn|numpy <value>`;
the table below holds, per script, the lesson's values (as strings: the value
must agree to the digits written, never fewer than the lesson gives) and
claims about the numbers that the lesson states in words.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LINE = re.compile(r"^(?P<label>\S.*?)\s+lesson (?P<lesson>.+?)\s+(?P<source>fastnn|numpy) (?P<value>\S+)$")


def agree(got, expected):
    """got equals the decimal string expected to its last written digit."""
    decimals = len(expected.partition(".")[2])
    return abs(got - float(expected)) <= 0.5 * 10.0 ** -decimals + 1e-12


def same(a, b):
    """a and b agree to 4 significant digits."""
    return abs(a - b) <= 1e-4 * max(abs(a), abs(b)) + 1e-15


def paths_match_the_lesson_rule(v):
    lines = [v[f"{name}, {axis} after 30 steps (lr {lr})"] for name, lr in
             (("SGD", 0.95), ("Momentum", 0.1), ("AdaGrad", 1.5), ("RMSprop", 0.1), ("Adam", 0.3)) for axis in "xy"]
    return all(same(float(lesson), value) for lesson, value in lines)


def gradients_agree(name):
    return lambda v: 0 < v[f"mean |numerical - backprop|, {name}"][1] < 1e-8


SCRIPTS = {
    "01_loss_functions.py": {
        "figure": "loss_functions.png",
        "values": {
            "SSE, 0.6 on the right class": "0.0975", "SSE, 0.6 on a wrong class": "0.5975",
            "CEE, 0.6 on the right class": "0.5108", "CEE, 0.6 on a wrong class": "2.3026",
            "1/2 sum (y - t)^2": "5.5000", "mean (y - t)^2": "2.2000",
            "CEE, batch, sample 0": "1.2040", "CEE, batch, sample 1": "0.6931", "CEE, batch, sample 2": "0.6931",
            "CEE, batch, mean (one-hot labels)": "0.8634", "CEE, batch, mean (integer labels)": "0.8634",
            "CEE, better batch, sample 0": "0.5108", "CEE, better batch, sample 1": "0.6931",
            "CEE, better batch, sample 2": "0.6931", "CEE, better batch, mean (one-hot labels)": "0.6324",
            "CEE, better batch, mean (integer labels)": "0.6324",
            "binary CE": "0.3486", "-log(0.9)": "0.1054", "-log(0.6)": "0.5108",
        },
    },
    "02_chain_rule.py": {
        "figure": "chain_rule.png",
        "values": {
            "a10, hidden unit feeding w": "0.518", "a, the output": "0.609", "dE/da = -(t - a)": "0.309",
            "dE/dz = dE/da * a (1 - a)": "0.0736", "dE/dw by hand, from the rounded numbers": "0.0381",
            "dE/dw by backward()": "0.0381", "w+ = 0.4 - 0.5 * 0.0381 by hand": "0.381",
            "w+ after one optim.SGD(lr=0.5).step()": "0.381",
        },
    },
    "03_activations.py": {
        "figure": "activations.png",
        "values": {"max of sigmoid'(x), at x = 0": "0.2500", "max of tanh'(x), at x = 0": "1.0000"},
        "claims": {
            "the sigmoid net's first layer gets orders of magnitude less gradient than its last":
                lambda v: v["sigmoid: layer 1 / layer 6 gradient norm"][1] < 1e-2,
            "the ReLU net's does not": lambda v: 0.1 < v["relu: layer 1 / layer 6 gradient norm"][1] < 10,
        },
    },
    "04_gradient_check.py": {
        "figure": "gradient_check.png",
        "claims": {
            f"numerical and backprop gradients of {name} agree (~1e-10)": gradients_agree(name)
            for name in ("0.weight", "0.bias", "2.weight", "2.bias")
        },
    },
    "05_optimizers.py": {
        "args": ["--quick"],
        "figure": "optimizers.png",
        "claims": {
            "each optimizer's path matches the lesson's update rule in NumPy": paths_match_the_lesson_rule,
            "SGD learns MNIST slowest": lambda v: all(
                v[f"{name}, MNIST loss of the last 100 steps"][1] < v["SGD, MNIST loss of the last 100 steps"][1]
                for name in ("Momentum", "AdaGrad", "RMSprop", "Adam")),
        },
    },
    "06_mini_batches.py": {
        "args": ["--quick"],
        "figure": "mini_batches.png",
        "values": {"share of images in one epoch of fastnn.Trainer": "1.0000"},
        "claims": {
            "600 batches drawn with replacement visit 1 - 1/e of the images (a sample: +-0.005)":
                lambda v: abs(v["share of images in 600 random batches (1 - 1/e)"][1] - 0.6321) < 0.005,
            "fastnn's batch CEE is the lesson's formula's": lambda v: same(
                v["batch CEE over 100 images, lesson's formula"][1], v["batch CEE over 100 images, fastnn"][1]),
            "an untrained net's CEE is about log(10)": lambda v: 2.0 < v["batch CEE over 100 images, fastnn"][1] < 2.6,
            "random mini-batches train the net": lambda v: v["test accuracy after 1800 steps"][1] > 0.93,
        },
    },
    "07_playground.py": {
        "figure": "playground.png",
        "claims": {
            "the test loss falls near 0": lambda v: v["test loss after 300 epochs"][1] < 0.02,
            "the circle is found": lambda v: v["test accuracy (sign of the output)"][1] >= 0.99,
        },
    },
    "08_mnist_in_ten_lines.py": {
        "figure": "mnist.png",
        "claims": {"the README's example reaches 98%": lambda v: v["test accuracy after 2 epochs"][1] >= 0.98},
    },
}


def test_every_example_is_in_the_table():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(SCRIPTS), "add each examples/ script to SCRIPTS in tests/test_examples.py"


def _run(script, out):
    env = dict(os.environ)
    # The suite shares the machine: one thread per script keeps a busy core from
    # stalling every parallel region; the numbers checked do not depend on it.
    env["FASTNN_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(out), *SCRIPTS[script].get("args", [])],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_example_prints_the_lessons_numbers_and_draws_its_figure(script, tmp_path):
    out = tmp_path / "out"
    stdout = _run(script, out)
    printed = {}
    for line in stdout.splitlines():
        match = LINE.match(line)
        if match:
            lesson, value = match["lesson"], float(match["value"])
            printed[match["label"]] = (lesson, value)
    entry = SCRIPTS[script]
    for label, expected in entry.get("values", {}).items():
        assert label in printed, f"{script} did not print {label!r}:\n{stdout}"
        lesson, value = printed[label]
        assert agree(value, expected), f"{script}: {label} = {value}, the lesson's value is {expected}"
        assert agree(float(expected), lesson), f"{script}: {label} prints the lesson's value {lesson}, not {expected}"
    for claim, holds in entry.get("claims", {}).items():
        assert holds(printed), f"{script}: not true that {claim}:\n{stdout}"
    figure = out / entry["figure"]
    assert figure.is_file() and figure.stat().st_size > 10_000, f"{script} did not write {figure}"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
