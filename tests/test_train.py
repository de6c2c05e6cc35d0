"""Trainer, MLPClassifier, checkpoints and the `fastnn train` CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim
from fastnn.optim import lr_scheduler


def blobs(n=600, classes=3, features=10, seed=0):
    """Gaussian clusters that a small MLP separates almost perfectly."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)) * 3
    labels = rng.integers(0, classes, n)
    x = (centers[labels] + rng.standard_normal((n, features))).astype(np.float32)
    return x, labels


def make_trainer(seed=0, epochs=5, dropout=0.0, scheduler=False, steps=None):
    model = nn.MLP([10, 32, 16, 3], "relu", dropout=dropout, seed=seed)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps) if scheduler else None
    return fastnn.Trainer(model, nn.CrossEntropyLoss(), opt, sched, batch_size=32, epochs=epochs, seed=seed,
                          verbose=False)


def test_trainer_learns_a_synthetic_problem(backend):
    x, y = blobs()
    trainer = make_trainer()
    before, _ = trainer.evaluate(x, y)
    history = trainer.fit(x[:500], y[:500], validation_data=(x[500:], y[500:]))
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert all(len(v) == 5 for v in history.values())
    assert history["loss"][-1] < 0.2 * before
    assert history["val_accuracy"][-1] > 0.95
    assert trainer.predict(x).shape == (600, 3)


def test_trainer_batches_cover_each_sample_once_per_epoch():
    """Each epoch is a fresh seeded permutation: every sample exactly once,
    a partial last batch, and a different order in the next epoch."""
    x, y = blobs(n=70)
    x[:, 0] = np.arange(70)  # the first feature names the sample
    seen = []

    class Recording(nn.Sequential):
        def forward(self, batch):
            seen.append(batch[:, 0].astype(int).tolist())
            return super().forward(batch)

    model = Recording(nn.Linear(10, 3, seed=0))
    trainer = fastnn.Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.0),
                             batch_size=32, epochs=2, seed=0, verbose=False)
    trainer.fit(x, y)
    assert [len(b) for b in seen] == [32, 32, 6, 32, 32, 6]
    first, second = sum(seen[:3], []), sum(seen[3:], [])
    assert sorted(first) == sorted(second) == list(range(70))
    assert first != second
    # The batches are those of the seeded permutation, each sorted by label
    # (the sparse first-layer product then merges rows of one class).
    rng = np.random.default_rng(0)
    for epoch in (seen[:3], seen[3:]):
        order = rng.permutation(70)
        for k, batch in enumerate(epoch):
            assert sorted(batch) == sorted(order[32 * k:32 * (k + 1)].tolist())
            assert np.all(np.diff(y[batch]) >= 0)


def test_label_sorted_batches_keep_each_batch_and_sort_it():
    from fastnn.sparse_input import label_sorted_batches as _label_sorted_batches
    rng = np.random.default_rng(1)
    # (2000, 2, 1000): keys past 16 bits
    shapes = ((1000, 7, 3, 0), (300, 128, 1000, -5), (5, 10, 2, 0), (70000, 128, 10, 0), (2000, 2, 1000, 0))
    for n, batch_size, classes, low in shapes:
        y = rng.integers(low, classes, n)
        order = rng.permutation(n)
        got, got_labels = _label_sorted_batches(order, y[order], batch_size)
        np.testing.assert_array_equal(got_labels, y[got])
        for start in range(0, n, batch_size):
            batch = got[start:start + batch_size]
            assert sorted(batch.tolist()) == sorted(order[start:start + batch_size].tolist())
            labels = y[batch]
            assert np.all(np.diff(labels) >= 0)
            # stable: samples of one label keep their shuffled order
            for label in np.unique(labels):
                same = batch[labels == label].tolist()
                chunk = order[start:start + batch_size]
                assert same == chunk[y[chunk] == label].tolist()
    targets = rng.random((50, 3))
    order = rng.permutation(50)
    got, got_targets = _label_sorted_batches(order, targets[order], 8)
    assert got is order
    np.testing.assert_array_equal(got_targets, targets[order])


def test_prefetching_the_next_batch_changes_nothing(monkeypatch):
    """The cpp backend's prefetch_rows is only a hint: each step asks for the
    next batch's rows, and training without it gives bit-identical weights."""
    from fastnn import backends
    from fastnn.backends import cpp_backend
    previous = fastnn.backend()
    fastnn.set_backend("cpp")
    try:
        _train_with_and_without_prefetch(monkeypatch, cpp_backend)
    finally:
        backends.set_active(previous)


def _train_with_and_without_prefetch(monkeypatch, cpp_backend):
    x, y = blobs(n=200)
    asked = []
    prefetch = cpp_backend.prefetch_rows
    monkeypatch.setattr(cpp_backend, "prefetch_rows", lambda xs, idx: (asked.append(idx.copy()), prefetch(xs, idx)))
    with_hint = make_trainer(seed=2, epochs=2)
    with_hint.fit(x, y)
    seen = []
    monkeypatch.setattr(cpp_backend, "gather_rows", lambda xs, idx, out=None: (seen.append(idx.copy()),
                                                                                 np.take(xs, idx, axis=0, out=out))[1])
    monkeypatch.setattr(cpp_backend, "prefetch_rows", lambda xs, idx: None)
    without = make_trainer(seed=2, epochs=2)
    without.fit(x, y)
    # every batch but each epoch's first was asked for one step ahead
    assert [a.tolist() for a in asked] == [b.tolist() for e in (seen[:7], seen[7:]) for b in e[1:]]
    for a, b in zip(with_hint.model.parameters(), without.model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_same_seed_gives_bit_identical_training():
    x, y = blobs()
    runs = []
    for _ in range(2):
        trainer = make_trainer(seed=3, epochs=2, dropout=0.1)
        trainer.fit(x, y)
        runs.append([p.data.copy() for p in trainer.model.parameters()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_resume_is_exact(tmp_path):
    """8 steps straight == 4 steps, save, load into fresh objects, 4 steps."""
    x, y = blobs(n=128)  # 4 steps per epoch with batch 32
    straight = make_trainer(epochs=2, dropout=0.2, scheduler=True, steps=8)
    straight.fit(x, y)

    first = make_trainer(epochs=1, dropout=0.2, scheduler=True, steps=8)
    first.fit(x, y)
    path = tmp_path / "ckpt.npz"
    fastnn.save(path, first.model, first.optimizer, trainer=first.state_dict())

    ckpt = fastnn.load(path)
    resumed = make_trainer(epochs=2, dropout=0.2, scheduler=True, steps=8)
    resumed.model = ckpt.model
    resumed.optimizer = optim.Adam(ckpt.model.parameters(), lr=1e-2)
    resumed.scheduler = lr_scheduler.OneCycleLR(resumed.optimizer, max_lr=1e-2, total_steps=8)
    resumed.optimizer.load_state_dict(ckpt.optimizer_state)
    resumed.load_state_dict(ckpt.meta["trainer"])
    resumed.fit(x, y)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert resumed.history["loss"] == straight.history["loss"]


def test_checkpoint_roundtrip_and_refusals(tmp_path):
    model = nn.Sequential(nn.Linear(4, 5, seed=1), nn.Tanh(), nn.Linear(5, 2, seed=2), nn.LeakyReLU(0.2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    model.backward(model(x))
    opt.step()
    path = tmp_path / "m.npz"
    fastnn.save(path, model, opt, epoch=3, note="hello", curve=[1.0, 0.5])
    ckpt = fastnn.load(path)
    np.testing.assert_array_equal(ckpt.model(x), model(x))
    assert ckpt.meta == {"epoch": 3, "note": "hello", "curve": [1.0, 0.5]}
    assert ckpt.optimizer_state is not None
    assert fastnn.load(tmp_path / "m.npz").optimizer_state["param_groups"][0]["momentum"] == 0.9
    # No temporary files are left behind by the atomic write.
    assert os.listdir(tmp_path) == ["m.npz"]

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable fastnn checkpoint"):
        fastnn.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastnn checkpoint"):
        fastnn.load(foreign)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError):
        fastnn.load(text)
    assert fastnn.load(path).model is not None
    with pytest.raises(TypeError, match="no pickle"):
        fastnn.save(tmp_path / "bad.npz", model, obj=object())


def test_mlp_classifier_sklearn_style():
    x, y = blobs(n=400)
    names = np.array(["a", "b", "c"])[y]
    clf = fastnn.MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0)
    assert clf.fit(x, names) is clf
    assert clf.score(x, names) > 0.95
    proba = clf.predict_proba(x[:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert set(clf.predict(x[:20])) <= {"a", "b", "c"}
    assert len(clf.loss_curve_) == clf.n_iter_ and clf.loss_curve_[-1] < clf.loss_curve_[0]

    partial = fastnn.MLPClassifier(hidden_layer_sizes=(32,), random_state=0)
    partial.partial_fit(x, names, classes=["a", "b", "c"])
    partial.partial_fit(x, names)
    assert len(partial.loss_curve_) == 2
    with pytest.raises(ValueError):
        fastnn.MLPClassifier().partial_fit(x, names)

    early = fastnn.MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, early_stopping=True,
                                 n_iter_no_change=3, random_state=0).fit(x, y)
    assert early.n_iter_ < 200 and len(early.validation_scores_) == early.n_iter_
    with pytest.raises(RuntimeError, match="not fitted"):
        fastnn.MLPClassifier().predict(x)


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fastnn", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_cli_train_end_to_end_on_a_subset(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--limit", "3000", "--epochs", "2", "--schedule", "step", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("epoch ") >= 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 2
    assert metrics["test_accuracy"] > 0.85  # 3000 samples, 2 epochs
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = fastnn.load(out / "model.npz")
    assert ckpt.meta["args"]["epochs"] == 2

    # --resume with more epochs continues from the checkpoint.
    resumed = run_cli("train", "--resume", str(out / "model.npz"), "--epochs", "3", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert len(json.loads((out / "metrics.json").read_text())["history"]["loss"]) == 3


def test_cli_train_defaults_reach_98_percent_on_mnist(tmp_path):
    # The recipe that README and the time-to-98% benchmark quote: no flags but the output folder.
    out = tmp_path / "run"
    result = run_cli("train", "--no-plot", "--out", str(out))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["dataset"] == "mnist" and metrics["settings"]["limit"] is None
    assert metrics["test_accuracy"] >= 0.98, metrics["history"]


def test_cli_info():
    result = run_cli("info")
    assert result.returncode == 0
    for key in ("version", "backend", "isa", "threads", "compiler"):
        assert key in result.stdout


def test_cli_refuses_to_stretch_a_one_cycle_schedule(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--limit", "500", "--epochs", "1", "--no-plot", "--out", str(out)).returncode == 0
    result = run_cli("train", "--resume", str(out / "model.npz"), "--epochs", "2", "--out", str(out))
    assert result.returncode != 0 and "one-cycle" in result.stderr


def test_ctrl_c_writes_a_checkpoint_and_resume_matches_uninterrupted_run(tmp_path):
    """SIGINT mid-training: exit code 130, a checkpoint, and --resume ends on
    exactly the weights of a run that was never interrupted."""
    import signal
    args = ["train", "--limit", "8000", "--hidden", "64", "--epochs", "3", "--no-plot", "--threads", "1"]
    full = tmp_path / "full"
    assert run_cli(*args, "--out", str(full), env={"FASTNN_BACKEND": "numpy"}).returncode == 0

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "fastnn", *args, "--out", str(cut)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FASTNN_BACKEND": "numpy"})
    for line in proc.stdout:
        if line.startswith("epoch 1/"):
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "interrupted: checkpoint written" in err
    assert fastnn.load(cut / "model.npz").meta["trainer"]["epoch"] < 3

    resumed = run_cli("train", "--resume", str(cut / "model.npz"), "--out", str(cut), env={"FASTNN_BACKEND": "numpy"})
    assert resumed.returncode == 0, resumed.stderr
    a, b = fastnn.load(full / "model.npz").model, fastnn.load(cut / "model.npz").model
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=0, atol=0)
