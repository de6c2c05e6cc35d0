"""Trainer, checkpoints and the `fastnn train` CLI."""
import json
import os
import subprocess
import sys
import warnings

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


def test_a_second_fit_continues_up_to_epochs_and_warns_when_none_are_left():
    """fit trains until trainer.epochs epochs are done in all: a second call
    with none left trains nothing and warns how to go on; raising epochs then
    trains exactly the epochs a single longer run would have trained."""
    x, y = blobs(n=200)
    trainer = make_trainer(seed=4, epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first call has epochs to run: no warning
        trainer.fit(x, y)
    after_two = [p.data.copy() for p in trainer.model.parameters()]
    with pytest.warns(UserWarning, match=r"all 2 epochs are already done.*raise trainer\.epochs.*new Trainer"):
        history = trainer.fit(x, y)
    assert len(history["loss"]) == 2 and trainer.epoch == 2
    for p, before in zip(trainer.model.parameters(), after_two):
        np.testing.assert_array_equal(p.data, before)

    trainer.epochs = 3
    trainer.fit(x, y)
    straight = make_trainer(seed=4, epochs=3)
    straight.fit(x, y)
    assert trainer.epoch == 3 and trainer.history["loss"] == straight.history["loss"]
    for p, q in zip(trainer.model.parameters(), straight.model.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("interval, steps_per_lr_step", [("auto", 7), ("epoch", 7), ("batch", 1)])
def test_scheduler_interval_decides_when_the_scheduler_steps(interval, steps_per_lr_step):
    """StepLR(step_size=1, gamma=0.5) steps once per epoch ('auto' and 'epoch')
    or after every batch ('batch'): after 2 epochs of 7 batches the rate is
    halved 2 or 14 times."""
    x, y = blobs(n=200)  # 7 batches of 32 per epoch
    model = nn.MLP([10, 8, 3], seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    trainer = fastnn.Trainer(model, nn.CrossEntropyLoss(), opt, lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
                             batch_size=32, epochs=2, verbose=False, scheduler_interval=interval)
    trainer.fit(x, y)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** (14 // steps_per_lr_step), rel=1e-12)
    with pytest.raises(ValueError, match="scheduler_interval"):
        fastnn.Trainer(model, nn.CrossEntropyLoss(), opt, batch_size=32, scheduler_interval="step")


@pytest.mark.parametrize("with_validation", [True, False])
def test_reduce_lr_on_plateau_steps_on_the_validation_loss(with_validation):
    """ReduceLROnPlateau gets each epoch's validation loss (the training loss
    when there is no validation data) and reduces the rate by its rules: with
    patience 0 and an improvement threshold no loss can meet, every epoch after
    the first cuts the rate."""
    x, y = blobs(n=300)
    seen = []

    class Recording(lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics, epoch=None):
            seen.append(metrics)
            super().step(metrics, epoch)

    model = nn.MLP([10, 8, 3], seed=0)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    sched = Recording(opt, factor=0.5, patience=0, threshold=1e3, threshold_mode="abs")
    trainer = fastnn.Trainer(model, nn.CrossEntropyLoss(), opt, sched, batch_size=32, epochs=4, verbose=False)
    history = trainer.fit(x[:200], y[:200], validation_data=(x[200:], y[200:]) if with_validation else None)
    assert seen == history["val_loss" if with_validation else "loss"]
    if with_validation:
        assert seen != history["loss"]  # the two curves differ, so the test tells them apart
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5 ** 3, rel=1e-12)


def test_trainer_fits_regression_targets():
    """Float targets (N, 2) with MSELoss: no accuracy anywhere, evaluate's loss
    is the mean squared error of predict, and a linear model trained long
    enough reaches the least-squares error of the data."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 6)).astype(np.float32)
    w = rng.standard_normal((6, 2))
    y = (x @ w + 0.1 * rng.standard_normal((400, 2)) + [1.0, -2.0]).astype(np.float32)
    model = nn.Sequential(nn.Linear(6, 2, seed=0))
    trainer = fastnn.Trainer(model, nn.MSELoss(), optim.Adam(model.parameters(), lr=3e-2), batch_size=50,
                             epochs=60, verbose=False)
    history = trainer.fit(x[:300], y[:300], validation_data=(x[300:], y[300:]))
    assert history["accuracy"] == [None] * 60 and history["val_accuracy"] == [None] * 60
    loss, accuracy = trainer.evaluate(x, y)
    assert accuracy is None
    pred = trainer.predict(x)
    assert pred.shape == (400, 2)
    assert loss == pytest.approx(np.mean((pred.astype(np.float64) - y) ** 2), rel=1e-5)
    design = np.hstack([x[:300], np.ones((300, 1), np.float32)]).astype(np.float64)
    best = np.mean((design @ np.linalg.lstsq(design, y[:300], rcond=None)[0] - y[:300]) ** 2)
    assert history["loss"][0] > 10 * best
    assert trainer.evaluate(x[:300], y[:300])[0] < 1.05 * best


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
    saved_output = model(x).copy()
    np.testing.assert_array_equal(ckpt.model(x), saved_output)
    assert ckpt.meta == {"epoch": 3, "note": "hello", "curve": [1.0, 0.5]}
    assert_same_tree(ckpt.optimizer_state, opt.state_dict())
    assert ckpt.optimizer_state["param_groups"][0]["momentum"] == 0.9
    # The restored optimizer takes the very step the saved one takes next.
    restored = optim.SGD(ckpt.model.parameters(), lr=0.5)
    restored.load_state_dict(ckpt.optimizer_state)
    for m in (model, ckpt.model):
        m.backward(m(x))
    opt.step()
    restored.step()
    for p, q in zip(model.parameters(), ckpt.model.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
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
    np.testing.assert_array_equal(fastnn.load(path).model(x), saved_output)  # the refusals left it alone
    with pytest.raises(TypeError, match="no pickle"):
        fastnn.save(tmp_path / "bad.npz", model, obj=object())


def assert_same_tree(got, want, where="state"):
    """got equals want: the same nesting of dicts, lists and tuples, equal
    arrays of the same dtype, equal scalars of the same type."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        np.testing.assert_array_equal(got, want, err_msg=where)
    elif isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same_tree(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_tree(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_checkpoint_with_a_damaged_inside_is_refused(tmp_path):
    """A readable .npz with the fastnn marker whose contents do not make a
    model (a weight missing, the architecture not JSON, a weight of the
    wrong shape) raises ValueError saying the checkpoint is damaged."""
    model = nn.Sequential(nn.Linear(4, 3, seed=1), nn.ReLU())
    good = tmp_path / "good.npz"
    fastnn.save(good, model, epoch=1)
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    damages = {
        "missing weight": {k: v for k, v in arrays.items() if k != "model/0.weight"},
        "config not JSON": dict(arrays, **{"model.config": np.array("{not json")}),
        "weight of the wrong shape": dict(arrays, **{"model/0.weight": np.zeros((2, 2), np.float32)}),
    }
    for what, damaged in damages.items():
        path = tmp_path / f"{what.replace(' ', '_')}.npz"
        np.savez(path, **damaged)
        with pytest.raises(ValueError, match="is a damaged fastnn checkpoint") as info:
            fastnn.load(path)
        assert str(path) in str(info.value), what


def test_a_failed_checkpoint_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    """save() writes a temporary file and renames it over the target: when the
    write fails midway, the error propagates, the previous checkpoint is intact
    and the temporary file is gone."""
    from fastnn import checkpoint
    model = nn.Sequential(nn.Linear(4, 3, seed=1))
    path = tmp_path / "model.npz"
    fastnn.save(path, model, epoch=1)
    before = path.read_bytes()

    def savez_until_the_disk_is_full(f, **arrays):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", savez_until_the_disk_is_full)
    with pytest.raises(OSError, match="No space left"):
        fastnn.save(path, nn.Sequential(nn.Linear(4, 3, seed=2)), epoch=2)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.npz"]
    assert path.read_bytes() == before
    assert fastnn.load(path).meta == {"epoch": 1}


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


def _cli_info(env):
    """`fastnn info` run with `env` replacing the FASTNN_* and OMP_* variables, as a dict of strings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FASTNN_", "OMP_"))}
    result = subprocess.run([sys.executable, "-m", "fastnn", "info"], capture_output=True, text=True,
                            env={**clean, **env}, timeout=600)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return dict(line.split(None, 1) for line in result.stdout.splitlines())


def test_cli_info_reports_what_is_in_use():
    from fastnn import _core
    info = _cli_info({"FASTNN_NUM_THREADS": "1"})
    assert set(info) == {"version", "backend", "isa", "cpu_isa", "threads", "compiler", "matmul_precision", "bf16"}
    assert info["version"] == fastnn.__version__
    assert info["backend"] == "cpp" and info["threads"] == "1" and info["matmul_precision"] == "highest"
    assert info["cpu_isa"] == _core.cpu_isa() and info["isa"] == info["cpu_isa"]  # the best path by default
    assert info["compiler"] == _core.compiler() and info["compiler"] not in ("", "None")
    default_threads = int(_cli_info({})["threads"])
    assert 1 <= default_threads <= os.cpu_count()
    # What the environment asks for shows up.
    generic = _cli_info({"FASTNN_ISA": "generic", "FASTNN_NUM_THREADS": "2"})
    assert generic["isa"] == "generic" and generic["cpu_isa"] == info["cpu_isa"] and generic["threads"] == "2"
    numpy_backend = _cli_info({"FASTNN_BACKEND": "numpy"})
    assert numpy_backend["backend"] == "numpy" and numpy_backend["threads"] == "1"


def test_cli_refuses_to_stretch_a_one_cycle_schedule(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--limit", "500", "--epochs", "1", "--no-plot", "--out", str(out)).returncode == 0
    result = run_cli("train", "--resume", str(out / "model.npz"), "--epochs", "2", "--out", str(out))
    assert result.returncode != 0 and "one-cycle" in result.stderr
    # Resuming a finished run without more epochs: one line saying how to go on.
    result = run_cli("train", "--resume", str(out / "model.npz"), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"fastnn train: {out / 'model.npz'} has done all 1 epochs already; pass --epochs N with N > 1 to train more"]


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
