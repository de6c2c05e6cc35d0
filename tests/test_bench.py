"""The benchmark suite: it runs (in its tiny mode, in a subprocess) and writes results.json in the
documented schema, the tables and the PNGs; its harness survives workers that hang or die.
Nothing about speed is asserted."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn.bench import cases, harness, reference as ref, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A whole tiny run, from a fresh interpreter as `fastnn bench` runs it."""
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PYTHON_DIR, os.environ.get("PYTHONPATH", "")]))
    code = ("import sys, fastnn.bench as b; "
            f"sys.exit(b.main(quick=True, out={str(out)!r}, tiny=True, verbose=False))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    return proc, out


def test_tiny_run_writes_every_output(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("results.json", "results.md", "kernels.png", "epoch.png"):
        assert (out / name).stat().st_size > 0, name
    for name in ("kernels.png", "epoch.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == PNG_MAGIC, name


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def test_json_follows_the_documented_schema(tiny_run):
    _, out = tiny_run
    res = json.loads((out / "results.json").read_text())
    for key in ("date", "mode", "machine", "peak", "copy_bandwidth", "kernels", "mnist_epoch", "time_to_98",
                "neighbour", "sklearn_fit", "targets", "skipped", "isolation"):
        assert key in res, key
    assert res["mode"] == "tiny"
    for key in ("cpu", "isa_flags", "logical_cpus", "versions", "fastnn", "environment"):
        assert key in res["machine"], key
    # The parent imported none of the measured libraries: each ran in its own worker.
    assert res["isolation"]["parent_imports"] == []
    assert {"textbook", "fastnn-cpp"} <= set(res["isolation"]["workers"])

    kernels = res["kernels"]
    assert {r["kernel"] for r in kernels} == {"relu", "sigmoid", "tanh", "softmax", "log_softmax", "cross_entropy",
                                              "softmax_cross_entropy", "matmul", "linear", "linear_backward",
                                              "adam_step"}
    for row in kernels:
        for key in ("kernel", "shape", "framework", "config", "seconds", "ratio_vs_textbook", "headline"):
            assert key in row, (key, row)
        assert "error" not in row, row
        assert _number(row["seconds"]) and row["seconds"] > 0, row
        assert _number(row["ratio_vs_textbook"]), row
        assert row["agrees_with_textbook"] in (True, None), row  # every implementation agrees with the textbook
    frameworks = {(r["framework"], r["config"]) for r in kernels}
    assert {("textbook NumPy", "NumPy's default BLAS threads"), ("fastnn", "cpp backend")} <= frameworks
    textbook = [r for r in kernels if r["framework"] == "textbook NumPy"]
    assert all(r["ratio_vs_textbook"] == 1.0 for r in textbook)

    epoch = res["mnist_epoch"]
    assert {r["framework"] for r in epoch} >= {"fastnn", "textbook NumPy"}
    for row in epoch:
        for key in ("framework", "config", "seconds", "ratio_fastnn_faster"):
            assert key in row, key
        assert row["seconds"] > 0 and _number(row["ratio_fastnn_faster"])
    head = [r for r in epoch if r["framework"] == "fastnn" and r["headline"]]
    assert len(head) == 1 and head[0]["ratio_fastnn_faster"] == 1.0
    assert res["time_to_98"] == [] and "time_to_98" in res["skipped"]

    for row in res["neighbour"]:
        assert row["slowdown"] > 0 and row["target"] == cases.NEIGHBOUR_TARGET
        assert row["pause_slowdown"] > 0 and row["after_pause_seconds"] > 0 and row["pause_seconds"] > 0
    assert {r["framework"] for r in res["neighbour"]} >= {"NumPy"}
    names = {t["name"] for t in res["targets"]}
    assert "time to 98% test accuracy" in names and "NumPy op right after a fastnn kernel" in names


def test_bf16_cases_follow_the_schema(tiny_run):
    _, out = tiny_run
    res = json.loads((out / "results.json").read_text())
    assert "bf16_peak" in res
    if not fastnn.info()["bf16"]:
        assert cases.MEDIUM in res["skipped"] and "AVX512_BF16" in res["skipped"][cases.MEDIUM]
        assert res["bf16_peak"]["gflops"] is None and "AVX512_BF16" in res["bf16_peak"]["error"]
        return
    assert res["bf16_peak"]["gflops"] > 0
    medium = [r for r in res["kernels"] if r["worker"] == cases.MEDIUM]
    assert {r["kernel"] for r in medium} == set(cases.BF16_KERNELS)
    for row in medium:
        assert row["precision"] == "bfloat16" and row["agrees_with_textbook"] is True and not row["headline"]
        if row["unit"] == "GFLOP/s":
            assert row["fraction_of_peak"] == pytest.approx(row["throughput"] / res["bf16_peak"]["gflops"])
    assert all(r["precision"] == "float32" for r in res["kernels"] if r["worker"] != cases.MEDIUM)
    epoch = {r["worker"]: r for r in res["mnist_epoch"]}
    assert cases.MEDIUM in epoch and _number(epoch["fastnn-cpp"]["ratio_medium_faster"])
    names = {t["name"] for t in res["targets"]}
    assert {"matmul 128x784x256, medium", "MNIST epoch, medium", "time to 98% test accuracy, medium"} <= names
    assert "**bfloat16 matmuls:" in (out / "results.md").read_text(encoding="utf-8")


def test_bf16_peak_is_measured_where_the_cpu_has_the_instruction():
    from fastnn.bench import baseline
    peak = baseline.measure_peak("bf16_dot", 1, seconds=0.01, reps=1)
    if fastnn.info()["bf16"]:
        assert peak["gflops"] > 0 and "VDPBF16PS" in peak["method"]
    else:
        assert peak["gflops"] is None and "AVX512_BF16" in peak["error"]


def test_torch_bf16_kernels_agree_with_the_textbook_within_bf16_rounding():
    torch = pytest.importorskip("torch")
    from fastnn.bench import worker, workloads
    for kernel, shape in (("matmul", (64, 300, 48)), ("linear", (64, 300, 48)), ("linear_backward", (64, 300, 48))):
        inputs = workloads.kernel_inputs(kernel, shape, 0, True)
        got = workloads.torch_kernel(torch, kernel, inputs, "bfloat16")()
        want = workloads.textbook_kernel(kernel, inputs)()
        assert workloads.agrees(got, want, worker.BF16_TOLERANCE), kernel
        first = got[0] if isinstance(got, tuple) else got
        assert first.dtype == torch.bfloat16  # the matmul really ran on bf16 tensors


def test_markdown_has_date_machine_and_tables(tiny_run):
    _, out = tiny_run
    md = (out / "results.md").read_text(encoding="utf-8")
    res = json.loads((out / "results.json").read_text())
    assert res["date"] in md and res["machine"]["cpu"] in md
    assert "| kernel | shape |" in md and "| framework |" in md and "**Targets**" in md
    summary = report.format_summary(res, "benchmarks/results")
    assert "| MNIST epoch |" in summary and "(benchmarks/results/results.md)" in summary


def _echo_worker(script):
    return [sys.executable, "-c", "import sys, json\n" + script]


ANSWERS = """for line in sys.stdin:
    req = json.loads(line)
    if req["cmd"] == "exit":
        break
    print(json.dumps({"ok": True, "seconds": 0.5}), flush=True)
"""


def test_a_hanging_or_dying_worker_is_reported_and_the_rounds_go_on():
    good = harness.Worker("good", _echo_worker(ANSWERS))
    hangs = harness.Worker("hangs", _echo_worker("import time\nsys.stdin.readline()\ntime.sleep(600)"))
    dies = harness.Worker("dies", _echo_worker("sys.stdin.readline()\nsys.stderr.write('boom\\n')\nsys.exit(3)"))
    try:
        result = harness.interleave([good, hangs, dies], lambda w, r: ("sample", {}), reps=3, max_reps=3, cpus=1,
                                    pause=0.0, timeout=3)
        assert len(result["rounds"]) == 3
        assert all(rd["good"]["seconds"] == 0.5 for rd in result["rounds"])
        assert "timed out after 3 s" in result["errors"]["hangs"]
        assert "died (exit status 3)" in result["errors"]["dies"] and "boom" in result["errors"]["dies"]
        assert not hangs.alive and not dies.alive and good.alive
        with pytest.raises(harness.WorkerError, match="timed out"):
            hangs.request("sample", 1)
    finally:
        for w in (good, hangs, dies):
            w.close()
    assert hangs.proc.poll() is not None  # the hanging worker was ended, not left behind


def test_a_failing_request_leaves_the_worker_alive():
    script = """for line in sys.stdin:
    req = json.loads(line)
    if req["cmd"] == "exit":
        break
    print(json.dumps({"ok": False, "error": "ValueError: bad case"}), flush=True)
"""
    w = harness.Worker("fails", _echo_worker(script))
    try:
        with pytest.raises(harness.WorkerError, match="bad case"):
            w.request("kernel_prepare", 30)
        assert w.alive
    finally:
        w.close()


def test_a_missing_framework_is_reported_as_not_installed(tmp_path):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), PYTHON_DIR]))
    w = harness.Worker.start("torch-1", env)
    try:
        hello = w.request("hello", 120)
        assert hello["available"] is False and "no torch here" in hello["reason"]
    finally:
        w.close()


def test_paired_ratio_is_the_median_of_per_round_ratios():
    """Not the quotient of the two median times, which can come from different rounds."""
    fast, slow = [0.25, 0.43, 0.42, 0.43, 0.25], [1.2, 1.24, 1.68, 1.6, 1.04]
    rounds = [{"a": {"seconds": f}, "b": {"seconds": s}} for f, s in zip(fast, slow)]
    paired = float(np.median(np.divide(slow, fast)))
    assert harness.paired_ratio(rounds, "b", "a") == pytest.approx(paired)
    assert paired != pytest.approx(np.median(slow) / np.median(fast))


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Performance\n\nold text\n\n## Next\n\nkept\n")
    report.update_readme(str(readme), "table one\n")
    text = readme.read_text()
    assert "old text" not in text and "table one" in text and "## Next\n\nkept" in text
    assert text.count(report.START) == 1 and text.count(report.END) == 1
    report.update_readme(str(readme), "table two\n")
    text = readme.read_text()
    assert "table one" not in text and "table two" in text and "## Next\n\nkept" in text


def test_textbook_reference_agrees_with_fastnn():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 10)).astype(np.float32)
    t = rng.integers(0, 10, 64)
    loss, dx = ref.softmax_cross_entropy(x, t)
    want_loss, want_dx = fastnn.functional.softmax_cross_entropy(x, t)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(dx, want_dx, atol=1e-6)
    np.testing.assert_allclose(ref.log_softmax(x), fastnn.functional.log_softmax(x), atol=1e-5)


def test_textbook_label_smoothing_matches_fastnn():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 10)).astype(np.float32)
    t = rng.integers(0, 10, 32)
    layer = ref.SoftmaxWithLoss(label_smoothing=0.1)
    loss, dx = layer.forward(x, t), layer.backward()
    want_loss, want_dx = fastnn.functional.softmax_cross_entropy(x, t, label_smoothing=0.1)
    assert loss == pytest.approx(want_loss, rel=1e-4)  # the textbook's 1e-7 guard inside the log
    np.testing.assert_allclose(dx, want_dx, atol=1e-6)


def test_onecycle_matches_fastnn_scheduler():
    from fastnn import nn, optim
    from fastnn.bench import workloads
    model = nn.Linear(3, 2)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=20)
    for lr, beta1 in workloads.onecycle(20, 1e-2):
        group = opt.param_groups[0]
        assert lr == pytest.approx(group["lr"], rel=1e-9) and beta1 == pytest.approx(group["betas"][0], rel=1e-9)
        opt.step()
        if sched.last_epoch < 19:
            sched.step()


def test_initial_weights_are_fastnns_own():
    from fastnn import nn
    from fastnn.bench import workloads
    model = nn.MLP(cases.SIZES, "relu", seed=3)
    linears = [layer for layer in model.layers if isinstance(layer, nn.Linear)]
    for layer, (W, b) in zip(linears, workloads.initial_weights(cases.SIZES, 3)):
        np.testing.assert_array_equal(layer.weight.data, W)
        np.testing.assert_array_equal(layer.bias.data, b)
