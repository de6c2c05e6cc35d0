"""Training loop: Trainer (Keras-like fit / evaluate / predict).

The per-step loop does no Python-side allocation on the data path: the batch
is gathered into reused buffers by the backend's parallel gather_rows, layers
reuse their buffers, and the optimizer runs one fused update per parameter.
"""
import contextlib
import signal
import sys
import threading
import time
import warnings

import numpy as np

from . import backends
from . import functional as F
from . import nn
from . import optim as optim_module
from . import sparse_input

__all__ = ["Trainer", "HISTORY_KEYS"]

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")


def _labels_or_targets(y, n):
    y = np.asarray(y)
    if y.shape[0] != n:
        raise ValueError(f"x and y have different numbers of samples: {n} and {y.shape[0]}")
    if y.dtype.kind in "iu":
        return np.ascontiguousarray(y, dtype=np.int64)
    return F.as_float_array(y, "y")


class Trainer:
    """Mini-batch training of `model` on (x, y).

    Each epoch draws batches without replacement from a seeded shuffle (with
    integer labels and a sparse input layer, each batch's rows are then
    ordered by label: see fastnn.sparse_input). The
    scheduler, if any, steps after every batch for OneCycleLR, with the
    validation (or training) loss for ReduceLROnPlateau, else once per epoch;
    scheduler_interval='batch' | 'epoch' overrides that.
    """

    def __init__(self, model, loss, optimizer, scheduler=None, batch_size=128, epochs=10, seed=0,
                 verbose=True, progress=None, scheduler_interval="auto", eval_batch_size=4096):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(epochs) < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if scheduler_interval not in ("auto", "batch", "epoch"):
            raise ValueError(f"scheduler_interval must be 'auto', 'batch' or 'epoch', got {scheduler_interval!r}")
        self.model, self.loss, self.optimizer, self.scheduler = model, loss, optimizer, scheduler
        self.batch_size, self.epochs, self.seed = int(batch_size), int(epochs), seed
        self.verbose = verbose
        # A bar on a terminal, one plain line per epoch otherwise.
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.eval_batch_size = int(eval_batch_size)
        self.scheduler_interval = scheduler_interval
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.history = {k: [] for k in HISTORY_KEYS}
        self._interrupted = False
        self._step_state = None
        self._resume_step = None  # (rng state at epoch start, step, running sums) when resuming mid-epoch

    # ------------------------------------------------------------ scheduling
    def _per_batch_scheduler(self):
        if self.scheduler is None:
            return False
        if self.scheduler_interval != "auto":
            return self.scheduler_interval == "batch"
        return isinstance(self.scheduler, optim_module.lr_scheduler.OneCycleLR)

    def _epoch_end_scheduler_step(self, train_loss, val_loss):
        if self.scheduler is None or self._per_batch_scheduler():
            return
        if isinstance(self.scheduler, optim_module.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss if val_loss is not None else train_loss)
        else:
            self.scheduler.step()

    # ------------------------------------------------------------ metrics
    @staticmethod
    def _correct(pred, y):
        """Number of correct predictions, or None where accuracy has no meaning."""
        if y.dtype != np.int64:
            return None
        if pred.ndim == 2 and pred.shape[1] > 1:
            return int(np.count_nonzero(pred.argmax(axis=1) == y))
        return None

    def evaluate(self, x, y):
        """(mean loss, accuracy or None) over (x, y), in eval mode, without touching gradients."""
        x = F.as_float_array(x, "x", self._dtype())
        y = _labels_or_targets(y, x.shape[0])
        was_training = self.model.training
        self.model.eval()
        total_loss, correct, n = 0.0, 0, x.shape[0]
        try:
            for start in range(0, n, self.eval_batch_size):
                xb, yb = x[start:start + self.eval_batch_size], y[start:start + self.eval_batch_size]
                pred = self.model(xb)
                total_loss += self.loss.forward(pred, yb) * (xb.shape[0] if self.loss.reduction == "mean" else 1)
                c = self._correct(pred, yb)
                correct = None if c is None else (correct + c if correct is not None else None)
        finally:
            self.model.train(was_training)
        mean_loss = total_loss / n if self.loss.reduction == "mean" else total_loss
        return mean_loss, (None if correct is None else correct / n)

    def predict(self, x):
        """Model outputs for x, computed in eval mode in large batches."""
        x = F.as_float_array(x, "x", self._dtype())
        was_training = self.model.training
        self.model.eval()
        try:
            return np.concatenate([self.model(x[s:s + self.eval_batch_size])
                                   for s in range(0, x.shape[0], self.eval_batch_size)])
        finally:
            self.model.train(was_training)

    def _dtype(self):
        params = self.model.parameters()
        return params[0].data.dtype if params else np.float32

    # ------------------------------------------------------------ training
    def fit(self, x, y, validation_data=None):
        """Train until self.epochs epochs are done in all, counting those of
        earlier fit calls and of a loaded state_dict; returns the history dict
        (lists per epoch: loss, accuracy, val_loss, val_accuracy, seconds).

        So a second fit on the same Trainer continues where the first ended,
        which is what resuming from a checkpoint needs, and trains nothing
        (with a warning) once all epochs are done: raise `epochs` to train
        more epochs, or make a new Trainer to train again from the start.
        """
        x = F.as_float_array(x, "x", self._dtype())
        if x.ndim != 2:
            raise ValueError(f"x must be 2-D (samples, features), got shape {x.shape}")
        y = _labels_or_targets(y, x.shape[0])
        if x.shape[0] == 0:
            raise ValueError("x is empty: there is nothing to train on")
        if validation_data is not None:
            x_val, y_val = validation_data
            x_val = F.as_float_array(x_val, "x_val", x.dtype)
            y_val = _labels_or_targets(y_val, x_val.shape[0])
        if self.epoch >= self.epochs:
            warnings.warn(f"Trainer.fit: all {self.epochs} epochs are already done, so this call trains nothing; "
                          f"raise trainer.epochs (e.g. trainer.epochs += 5) to train more, or make a new Trainer "
                          f"to train again from the start", UserWarning, stacklevel=2)
            return self.history
        self.model.train()
        with self._interrupts_at_step_boundaries():
            self._fit_epochs(x, y, validation_data and (x_val, y_val))
        return self.history

    @contextlib.contextmanager
    def _interrupts_at_step_boundaries(self):
        """Ctrl-C raises KeyboardInterrupt between two steps, never inside one,
        so that state_dict() then describes a consistent point to resume from."""
        self._interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            self._interrupted = True

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _fit_epochs(self, x, y, validation_data):
        while self.epoch < self.epochs:
            started = time.perf_counter()
            train_loss, train_acc = self._run_epoch(x, y)
            val_loss = val_acc = None
            if validation_data is not None:
                val_loss, val_acc = self.evaluate(*validation_data)
            self._epoch_end_scheduler_step(train_loss, val_loss)
            self.epoch += 1
            for key, value in zip(HISTORY_KEYS, (train_loss, train_acc, val_loss, val_acc,
                                                 time.perf_counter() - started)):
                self.history[key].append(value)
            if self.verbose:
                print(self.epoch_line(), flush=True)

    def epoch_line(self):
        """One plain line describing the last finished epoch."""
        h = self.history
        parts = [f"epoch {self.epoch}/{self.epochs}", f"loss {h['loss'][-1]:.4f}"]
        if h["accuracy"][-1] is not None:
            parts.append(f"acc {h['accuracy'][-1]:.4f}")
        if h["val_loss"][-1] is not None:
            parts.append(f"val_loss {h['val_loss'][-1]:.4f}")
        if h["val_accuracy"][-1] is not None:
            parts.append(f"val_acc {h['val_accuracy'][-1]:.4f}")
        parts.append(f"{h['seconds'][-1]:.2f}s")
        return "  ".join(parts)

    def _run_epoch(self, x, y):
        n, bs = x.shape[0], self.batch_size
        kernels = backends.active()
        if self._resume_step is not None:
            rng_state, first_step, loss_sum, correct, seen = self._resume_step
            self.rng.bit_generator.state = rng_state
            self._resume_step = None
        else:
            first_step, loss_sum, correct, seen = 0, 0.0, 0, 0
        self._epoch_rng_state = self.rng.bit_generator.state
        order = self._epoch_order(n)
        # The epoch's labels in one gather: each step's are then a slice, cheaper than a gather per step.
        y_shuffled = y.take(order, axis=0)
        if sparse_input.sorts_batches(self.model, kernels):
            order, y_shuffled = sparse_input.label_sorted_batches(order, y_shuffled, bs)
        steps = (n + bs - 1) // bs
        x_batch = np.empty((bs,) + x.shape[1:], x.dtype)
        per_batch_scheduler = self._per_batch_scheduler()
        bar = self._progress_bar(steps, first_step)
        try:
            for step in range(first_step, steps):
                self._step_state = (step, loss_sum, correct, seen)
                if self._interrupted:
                    raise KeyboardInterrupt
                idx = order[step * bs:(step + 1) * bs]
                m = idx.shape[0]
                xb = kernels.gather_rows(x, idx, x_batch[:m])
                if step + 1 < steps:
                    # The next batch's rows load while this one is computed: a random
                    # row of a large x is otherwise a cache miss on every step's path.
                    kernels.prefetch_rows(x, order[(step + 1) * bs:(step + 2) * bs])
                yb = y_shuffled[step * bs:(step + 1) * bs]
                pred, batch_loss = self._train_step(xb, yb, idx)
                if per_batch_scheduler:
                    self.scheduler.step()
                loss_sum += batch_loss * m if self.loss.reduction == "mean" else batch_loss
                c = self._correct(pred, yb)
                correct = None if c is None or correct is None else correct + c
                seen += m
                if bar is not None:
                    bar.update(1)
                    if step % 20 == 0:
                        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
        finally:
            if bar is not None:
                bar.close()
        self._step_state = None
        return loss_sum / seen, (None if correct is None else correct / seen)

    def _epoch_order(self, n):
        """The order in which the next epoch visits the n samples: a seeded shuffle."""
        return self.rng.permutation(n)

    def _train_step(self, xb, yb, idx):
        """Forward, backward and one optimizer step on the batch (xb, yb), rows idx
        of x; returns (predictions, batch loss)."""
        pred = self.model.forward(xb)
        batch_loss = self.loss.forward(pred, yb)
        self.model.backward(self.loss.backward(), need_input_grad=False)
        self.optimizer.step()
        return pred, batch_loss

    def _progress_bar(self, steps, initial):
        if not (self.verbose and self.progress):
            return None
        from tqdm.auto import tqdm
        return tqdm(total=steps, initial=initial, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                    leave=False, file=sys.stderr, dynamic_ncols=True)

    # ------------------------------------------------------------ resuming
    def state_dict(self):
        """Everything besides model and optimizer needed to continue exactly:
        epoch, shuffle RNG, history, scheduler, dropout RNGs, and the position
        inside an interrupted epoch."""
        state = {"epoch": self.epoch, "rng": self.rng.bit_generator.state,
                 "history": {k: list(v) for k, v in self.history.items()},
                 "dropout_rngs": [layer.rng.bit_generator.state for layer in _dropouts(self.model)],
                 "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                 "in_epoch": None}
        if self._step_state is not None:
            step, loss_sum, correct, seen = self._step_state
            state["in_epoch"] = {"rng": self._epoch_rng_state, "step": step, "loss_sum": loss_sum,
                                 "correct": correct, "seen": seen}
        return state

    def load_state_dict(self, state):
        self.epoch = int(state["epoch"])
        self.rng.bit_generator.state = state["rng"]
        self.history = {k: list(state["history"][k]) for k in HISTORY_KEYS}
        for layer, rng_state in zip(_dropouts(self.model), state["dropout_rngs"]):
            layer.rng.bit_generator.state = rng_state
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        in_epoch = state.get("in_epoch")
        if in_epoch is not None:
            self._resume_step = (in_epoch["rng"], int(in_epoch["step"]), float(in_epoch["loss_sum"]),
                                 in_epoch["correct"], int(in_epoch["seen"]))


def _dropouts(model):
    return [layer for layer in getattr(model, "layers", []) if isinstance(layer, nn.Dropout)]
