"""Smoke test of the benchmark suite: it runs (in its tiny mode) and writes
the table, the JSON, the markdown and the PNGs. Nothing about speed is asserted."""
import json

import numpy as np
import pytest

import fastnn
from fastnn import bench, bench_reference as ref

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    backend = fastnn.backend()
    code = bench.main(quick=True, out=str(out), tiny=True, verbose=False)
    assert fastnn.backend() == backend  # the suite restores the active backend
    return code, out


def test_tiny_run_writes_every_output(tiny_run):
    code, out = tiny_run
    assert code == 0
    for name in ("results.json", "results.md", "kernels.png", "epoch.png"):
        assert (out / name).stat().st_size > 0, name
    for name in ("kernels.png", "epoch.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == PNG_MAGIC, name


def test_json_has_the_expected_structure(tiny_run):
    _, out = tiny_run
    res = json.loads((out / "results.json").read_text())
    for key in ("date", "mode", "machine", "peak", "copy_bandwidth", "kernels", "end_to_end", "targets"):
        assert key in res, key
    assert res["mode"] == "tiny"
    machine = res["machine"]
    for key in ("cpu", "isa_flags", "logical_cpus", "versions", "fastnn"):
        assert key in machine, key
    for lib in ("numpy", "numba", "torch", "scikit-learn"):
        assert lib in machine["versions"]
    kernels = {r["kernel"] for r in res["kernels"]}
    assert kernels == {"relu", "sigmoid", "tanh", "softmax", "log_softmax", "cross_entropy",
                       "softmax_cross_entropy", "matmul", "linear", "linear_backward", "adam_step"}
    assert {r["group"] for r in res["kernels"]} == {"mlp", "large"}
    for row in res["kernels"]:
        assert "error" not in row, row
        assert not row.get("mismatch"), row  # every implementation agrees with the textbook
        assert "textbook" in row["seconds"]
        for name in ("numpy", "numba", "cpp"):
            assert name in row["speedup"], (row["kernel"], row["shape"], name)
    epoch = res["end_to_end"]["epoch"]
    names = {f["name"] for f in epoch["frameworks"]}
    assert {"fastnn (cpp)", "textbook NumPy"} <= names
    assert all(f["seconds"] > 0 for f in epoch["frameworks"])
    assert any(t["name"].startswith("time to 98%") for t in res["targets"])


def test_markdown_has_date_machine_and_tables(tiny_run):
    _, out = tiny_run
    md = (out / "results.md").read_text(encoding="utf-8")
    res = json.loads((out / "results.json").read_text())
    assert res["date"] in md and res["machine"]["cpu"] in md
    assert "| kernel | shape |" in md and "| framework |" in md and "**Targets**" in md


def test_epoch_targets_are_medians_of_per_round_ratios():
    """As the kernels' speed-ups: not the quotient of the two median times, which
    can come from different rounds."""
    fastnn_s, textbook_s = [0.25, 0.43, 0.42, 0.43, 0.25], [1.2, 1.24, 1.68, 1.6, 1.04]
    paired = float(np.median(np.divide(textbook_s, fastnn_s)))
    epoch = {"frameworks": [
        {"name": "fastnn (cpp)", "seconds": float(np.median(fastnn_s)), "relative_to_fastnn": 1.0},
        {"name": "textbook NumPy", "seconds": float(np.median(textbook_s)), "relative_to_fastnn": paired}]}
    targets = bench.evaluate_targets([], epoch, None, "cpp")
    got = next(t for t in targets if t["name"] == "MNIST epoch" and t["vs"] == "textbook NumPy")
    assert got["measured"] == pytest.approx(paired)
    assert paired != pytest.approx(np.median(textbook_s) / np.median(fastnn_s))


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Performance\n\nold text\n\n## Next\n\nkept\n")
    bench.update_readme(str(readme), "table one\n")
    text = readme.read_text()
    assert "old text" not in text and "table one" in text and "## Next\n\nkept" in text
    assert text.count(bench.START) == 1 and text.count(bench.END) == 1
    bench.update_readme(str(readme), "table two\n")
    text = readme.read_text()
    assert "table one" not in text and "table two" in text and "## Next\n\nkept" in text


def test_textbook_reference_agrees_with_fastnn():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 10)).astype(np.float32)
    t = rng.integers(0, 10, 64)
    loss, dx = ref.softmax_cross_entropy(x, t)
    want_loss, want_dx = fastnn.functional.softmax_cross_entropy(x, t)
    assert abs(loss - want_loss) < 1e-4
    np.testing.assert_allclose(dx, want_dx, atol=1e-6)
    np.testing.assert_allclose(ref.log_softmax(x), fastnn.functional.log_softmax(x), atol=1e-5)
