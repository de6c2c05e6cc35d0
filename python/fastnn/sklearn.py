"""MLPClassifier and MLPRegressor: scikit-learn estimators trained by fastnn.

    from fastnn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(100,), max_iter=20).fit(X, y)

They take scikit-learn's MLPClassifier / MLPRegressor parameters, with its
defaults and meanings, and set its fitted attributes, so that they drop into
pipelines, cross-validation and searches. The network is a fastnn.nn.Sequential
initialised as scikit-learn initialises its own (Glorot uniform, drawn from the
same random_state in the same order), trained by fastnn's Trainer with
fastnn.optim.Adam or SGD, epoch by epoch with scikit-learn's shuffle, L2
penalty, sample weights, stopping rule and learning-rate schedules.

Where they differ from scikit-learn, on purpose:
- float32 end to end by default (dtype=np.float32): a float32 X is used as it
  is, with no float64 copy; weights, gradients and outputs are float32.
  dtype=np.float64 computes in float64.
- fit runs fastnn's kernels (fused GEMM + activation, fused softmax
  cross-entropy, one in-place update per parameter): several times faster.
- warm_start=True and partial_fit keep the optimizer's state (Adam moments,
  SGD velocities) between calls; scikit-learn starts a warm-started fit with
  fresh moments.
- partial_fit works with early_stopping=True (scikit-learn raises).
- solver='lbfgs' is refused: use 'adam' or 'sgd'.
- extras that keep scikit-learn's behaviour at their defaults: dropout (after
  every hidden activation), label_smoothing (classifier), dtype, n_threads.

scikit-learn is the optional `sklearn` extra: pip install 'fastnn[sklearn]'.
"""
import contextlib
import warnings
from numbers import Integral, Real

import numpy as np

try:
    from scipy.special import xlogy
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, column_or_1d, shuffle
    from sklearn.utils._param_validation import Interval, Options, StrOptions
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:
    raise ImportError("fastnn.MLPClassifier and fastnn.MLPRegressor need scikit-learn: "
                      "pip install 'fastnn[sklearn]'") from exc

from . import functional as F
from . import info, nn, optim, set_num_threads
from .train import Trainer

__all__ = ["MLPClassifier", "MLPRegressor"]

_HIDDEN_ACTIVATIONS = {"identity": None, "logistic": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _CanonicalLoss:
    """scikit-learn's MLP loss for an output activation, on the network's raw
    outputs z: 'softmax' (log loss), 'logistic' (binary log loss summed over the
    outputs), 'identity' (half squared error, mean over the outputs) or 'exp'
    (half Poisson deviance). Each pairs with its activation so that the gradient
    with respect to z is (activation(z) - target) * w / sum(w) per row, w the
    batch's sample weights (`batch_weight`, None for all ones)."""

    reduction = "mean"

    def __init__(self, out_activation, label_smoothing=0.0):
        self.out_activation = out_activation
        self.label_smoothing = float(label_smoothing)
        self.batch_weight = None
        self._fused = nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        self._grad = None

    def forward(self, z, target):
        w = self.batch_weight
        if self.out_activation == "softmax" and w is None:
            loss = self._fused.forward(z, target)
            self._grad = self._fused.backward()
            return loss
        scale = None if w is None else _row_scale(w, z.dtype)
        if self.out_activation == "softmax":
            rows, self._grad = F.softmax_cross_entropy(z, target, "none", self.label_smoothing)
            self._grad *= scale
            return float(np.dot(rows, scale[:, 0]))
        if self.out_activation == "logistic":
            target = _smooth_binary(target, self.label_smoothing)
            elementwise = F.binary_cross_entropy_with_logits(z, target, "none")
            self._grad = F.sigmoid(z) - target
        elif self.out_activation == "identity":
            self._grad = z - target
            elementwise = 0.5 * self._grad * self._grad / z.shape[1]
        else:  # 'exp', the Poisson loss's log link
            mean = np.exp(z)
            elementwise = xlogy(target, target / mean) - target + mean
            self._grad = mean - target
        if scale is None:
            self._grad /= z.shape[0]
            return float(elementwise.sum() / z.shape[0])
        self._grad *= scale
        return float((elementwise * scale).sum())

    def backward(self):
        return self._grad


def _row_scale(w, dtype):
    """w / sum(w) as a column (zeros when every weight is zero: such a batch teaches nothing)."""
    total = float(w.sum())
    return (w / total if total > 0 else np.zeros_like(w)).astype(dtype, copy=False)[:, None]


def _smooth_binary(target, label_smoothing):
    if label_smoothing == 0.0:
        return target
    return target * target.dtype.type(1.0 - label_smoothing) + target.dtype.type(0.5 * label_smoothing)


class _EpochTrainer(Trainer):
    """fastnn's Trainer running scikit-learn's MLP epoch: batches in the order of
    scikit-learn's shuffle (drawn from the estimator's RandomState), optional
    sample weights, and the L2 penalty alpha * ||W||^2 / (2 * batch weight)
    added to each batch's loss, its gradient alpha * W / batch weight to the
    weights' (not the biases') gradient."""

    def __init__(self, model, loss, optimizer, weights):
        super().__init__(model, loss, optimizer, epochs=0, verbose=False, progress=False)
        self.weights = weights
        self.alpha = 0.0
        self.sample_weight = None
        self.random_state = None
        self.shuffle = True
        self.epsilon = None
        self._sample_idx = None

    def configure(self, n_samples, batch_size, alpha, sample_weight, random_state, shuffle_each_epoch, epsilon):
        """This call's data and settings; epsilon is Adam's (None for SGD)."""
        self.batch_size, self.alpha, self.sample_weight = int(batch_size), float(alpha), sample_weight
        self.epsilon = None if epsilon is None else float(epsilon)
        self.random_state, self.shuffle = random_state, shuffle_each_epoch
        self._sample_idx = np.arange(n_samples)

    def _epoch_order(self, n):
        if self.shuffle:
            # Each epoch shuffles the previous epoch's order, as scikit-learn does.
            self._sample_idx = shuffle(self._sample_idx, random_state=self.random_state)
        return self._sample_idx

    def _train_step(self, xb, yb, idx):
        w = None if self.sample_weight is None else self.sample_weight[idx]
        self.loss.batch_weight = w
        pred = self.model.forward(xb)
        batch_loss = self.loss.forward(pred, yb)
        if self.alpha:
            total = xb.shape[0] if w is None else float(w.sum())
            decay = self.alpha / total if total > 0 else 0.0
            self.optimizer.param_groups[0]["weight_decay"] = decay
            batch_loss += 0.5 * decay * sum(float(np.dot(W.data.ravel(), W.data.ravel())) for W in self.weights)
        self.model.backward(self.loss.backward(), need_input_grad=False)
        if self.epsilon is not None:
            self._place_adam_epsilon()
        self.optimizer.step()
        return pred, batch_loss

    def _place_adam_epsilon(self):
        """scikit-learn's Adam adds epsilon to sqrt(v), fastnn's (torch's) to
        sqrt(v / (1 - beta_2^t)): dividing epsilon by sqrt(1 - beta_2^t) makes
        fastnn's step scikit-learn's."""
        state = self.optimizer.state.get(self.weights[0])
        t = (state["step"] if state and "step" in state else 0) + 1
        for group in self.optimizer.param_groups:
            group["eps"] = self.epsilon / np.sqrt(1.0 - group["betas"][1] ** t)


@contextlib.contextmanager
def _threads(n_threads):
    """fastnn's kernels capped at n_threads for the duration (None: unchanged)."""
    if n_threads is None:
        yield
        return
    before = info()["threads"]
    set_num_threads(int(n_threads))
    try:
        yield
    finally:
        set_num_threads(before)


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: validation, the network, the epoch loop."""

    _parameter_constraints = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_HIDDEN_ACTIVATIONS))],
        "solver": [StrOptions({"adam", "sgd"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "dtype": [Options(type, {np.float32, np.float64}), Options(np.dtype, set(_DTYPES)),
                  StrOptions({"float32", "float64"})],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
    }

    # ------------------------------------------------------------ validation
    def _check_params(self):
        if isinstance(self.solver, str) and self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' is not supported by fastnn (it trains by mini-batches); "
                             "use solver='adam' or solver='sgd'")
        self._validate_params()
        hidden = self._hidden_sizes()
        if any(size <= 0 for size in hidden):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        return [int(s) for s in (sizes if hasattr(sizes, "__iter__") else [sizes])]

    @staticmethod
    def _sample_weight(sample_weight, n_samples, dtype):
        if sample_weight is None:
            return None
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim != 1 or w.shape[0] != n_samples:
            raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n_samples},)!")
        if not np.isfinite(w).all():
            raise ValueError("sample_weight must be finite")
        if (w < 0).any():
            raise ValueError("Negative values in data passed to sample_weight")
        if not w.any():
            raise ValueError("Sample weights must contain at least one non-zero number.")
        return w.astype(dtype)

    # ------------------------------------------------------------ the network
    def _initialize(self, layer_units, random_state, dtype):
        """A fresh network, optimizer and Trainer, and the fitted attributes' first values."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        layers, linears = [], []
        # Glorot uniform, drawn as scikit-learn draws it: layer by layer, weights then biases.
        factor = 2.0 if self.activation == "logistic" else 6.0
        for n_in, n_out in zip(layer_units[:-1], layer_units[1:]):
            linear = nn.Linear(n_in, n_out, seed=0, dtype=dtype)
            bound = np.sqrt(factor / (n_in + n_out))
            linear.weight.data[...] = random_state.uniform(-bound, bound, (n_in, n_out))
            linear.bias.data[...] = random_state.uniform(-bound, bound, n_out)
            linears.append(linear)
        dropout_rng = np.random.default_rng(random_state.randint(2 ** 31)) if self.dropout else None
        for k, linear in enumerate(linears):
            layers.append(linear)
            if k < len(linears) - 1:
                if _HIDDEN_ACTIVATIONS[self.activation] is not None:
                    layers.append(_HIDDEN_ACTIVATIONS[self.activation]())
                if self.dropout:
                    layers.append(nn.Dropout(self.dropout, seed=dropout_rng))
        model = nn.Sequential(*layers)
        self.coefs_ = [linear.weight.data for linear in linears]
        self.intercepts_ = [linear.bias.data for linear in linears]
        loss = _CanonicalLoss(self.out_activation_, getattr(self, "label_smoothing", 0.0))
        self._optimizer = self._new_optimizer(linears)
        self._trainer = _EpochTrainer(model, loss, self._optimizer, [linear.weight for linear in linears])
        self._linears = linears
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None
        self._best_state = None

    def _new_optimizer(self, linears):
        # Two groups: the L2 penalty (group 0's weight_decay, set per batch) spares the biases.
        groups = [{"params": [linear.weight for linear in linears]},
                  {"params": [linear.bias for linear in linears]}]
        if self.solver == "adam":
            return optim.Adam(groups, lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon)
        return optim.SGD(groups, lr=self.learning_rate_init, momentum=self.momentum,
                         nesterov=bool(self.nesterovs_momentum and self.momentum > 0))

    def _update_optimizer(self, reset_lr):
        """Carry the current hyperparameters into the kept optimizer (its moments stay)."""
        kind = optim.Adam if self.solver == "adam" else optim.SGD
        if type(self._optimizer) is not kind:
            self._optimizer = self._trainer.optimizer = self._new_optimizer(self._linears)
            return
        for group in self._optimizer.param_groups:
            if reset_lr:
                group["lr"] = float(self.learning_rate_init)
            if self.solver == "adam":
                group["betas"], group["eps"] = (float(self.beta_1), float(self.beta_2)), float(self.epsilon)
            else:
                group["momentum"] = float(self.momentum)
                group["nesterov"] = bool(self.nesterovs_momentum and self.momentum > 0)

    # ------------------------------------------------------------ fitting
    def _fit(self, X, y, sample_weight, incremental):
        self._check_params()
        dtype = np.dtype(self.dtype)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass, dtype=dtype)
        sample_weight = self._sample_weight(sample_weight, X.shape[0], dtype)
        layer_units = [X.shape[1], *self._hidden_sizes(), Y.shape[1]]
        random_state = check_random_state(self.random_state)
        if first_pass:
            self.n_outputs_ = Y.shape[1]
            self.out_activation_ = self._out_activation(Y)
            self._initialize(layer_units, random_state, dtype)
        else:
            fitted_units = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
            if layer_units != fitted_units or self.coefs_[0].dtype != dtype:
                raise ValueError(f"the network was fit with layer sizes {fitted_units} and dtype "
                                 f"{self.coefs_[0].dtype}; this call needs {layer_units} and {dtype}: "
                                 "refit with warm_start=False")
            self._update_optimizer(reset_lr=not incremental)
        with _threads(self.n_threads):
            self._fit_epochs(X, Y, sample_weight, random_state, incremental)
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError("Solver produced non-finite parameter weights. The input data may"
                             " contain large values and need to be preprocessed.")
        return self

    def _fit_epochs(self, X, Y, sample_weight, random_state, incremental):
        early_stopping = self.early_stopping
        X_val = y_val = sample_weight_val = None
        if early_stopping:
            # Stratified for single-output classifiers only, as scikit-learn splits.
            stratify = Y if is_classifier(self) and Y.shape[1] == 1 else None
            arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
            split = train_test_split(*arrays, random_state=random_state, test_size=self.validation_fraction,
                                     stratify=stratify)
            X, X_val, Y, Y_val = split[:4]
            if sample_weight is not None:
                sample_weight, sample_weight_val = split[4:]
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                                 "or the size of your dataset.")
            y_val = self._decode(Y_val)
        n_samples = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        targets = self._train_targets(Y)
        trainer = self._trainer
        trainer.configure(n_samples, batch_size, self.alpha, sample_weight, random_state, self.shuffle,
                          self.epsilon if self.solver == "adam" else None)
        self.n_iter_ = 0
        try:
            for _ in range(self.max_iter):
                trainer.epochs = trainer.epoch + 1
                self.loss_ = float(trainer.fit(X, targets)["loss"][-1])
                self.n_iter_ += 1
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                self._update_no_improvement_count(early_stopping, X_val, y_val, sample_weight_val)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._set_lr(self.learning_rate_init / (self.t_ + 1) ** self.power_t)
                if self._no_improvement_count > self.n_iter_no_change:
                    if self._stop_or_slow_down(early_stopping):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and "
                                  "the optimization hasn't converged yet.", ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if early_stopping and not incremental and self._best_state is not None:
            trainer.model.load_state_dict(self._best_state)

    def _set_lr(self, lr):
        """A new learning rate for the next steps. scikit-learn's SGD velocity holds
        past steps already scaled by their rate, torch's momentum buffer holds
        gradients: scaling the buffers by old / new rate keeps scikit-learn's velocity."""
        for group in self._optimizer.param_groups:
            old, group["lr"] = group["lr"], float(lr)
            for p in group["params"]:
                buffer = self._optimizer.state.get(p, {}).get("momentum_buffer")
                if buffer is not None:
                    buffer *= buffer.dtype.type(old / lr)

    def _stop_or_slow_down(self, early_stopping):
        """True to stop; with SGD's 'adaptive' schedule, divide the rate by 5 instead while it is > 1e-6."""
        what = "Validation score" if early_stopping else "Training loss"
        msg = f"{what} did not improve more than tol={self.tol:f} for {self.n_iter_no_change} consecutive epochs."
        lr = self._optimizer.param_groups[0]["lr"]
        if self.solver != "sgd" or self.learning_rate != "adaptive" or lr <= 1e-6:
            if self.verbose:
                print(msg + (" Learning rate too small." if self.learning_rate == "adaptive" else "") + " Stopping.")
            return True
        self._set_lr(lr / 5.0)
        if self.verbose:
            print(msg + " Setting learning rate to %f" % (lr / 5.0))
        return False

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, sample_weight_val):
        if early_stopping:
            score = self._score(X_val, y_val, sample_weight_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_state = self._trainer.model.state_dict()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    # ------------------------------------------------------------ predicting
    def _outputs(self, X, check_input=True):
        """The network's outputs after the output activation."""
        if check_input:
            check_is_fitted(self)
            X = validate_data(self, X, reset=False, dtype=self.coefs_[0].dtype, order="C")
        with _threads(self.n_threads):
            z = self._trainer.predict(X)
        if self.out_activation_ == "softmax":
            return F.softmax(z)
        if self.out_activation_ == "logistic":
            return F.sigmoid(z)
        if self.out_activation_ == "exp":
            return np.exp(z)
        return z

    def _score(self, X, y, sample_weight):
        """The validation score (accuracy or R^2) without input validation; NaN for non-finite outputs."""
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return float(self._score_function(y, y_pred, sample_weight=sample_weight))

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_trainer" in state:
            self._own_arrays()

    def _own_arrays(self):
        """After unpickling (possibly from read-only memory maps): writeable
        parameters and optimizer state, coefs_ / intercepts_ the network's own
        arrays again, and no stale scratch buffers."""
        for linear in self._linears:
            for p in linear.parameters():
                if not p.data.flags.writeable:
                    p.data = np.array(p.data)
                p.grad = None
                state = self._optimizer.state.get(p, {})
                for name, value in state.items():
                    if isinstance(value, np.ndarray) and not value.flags.writeable:
                        state[name] = np.array(value)
        self._trainer.model._buffers.clear()
        self._trainer.loss._grad = self._trainer.loss._fused._grad = None
        self.coefs_ = [linear.weight.data for linear in self._linears]
        self.intercepts_ = [linear.bias.data for linear in self._linears]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Dense input only: the first layer's GEMM reads a dense X (validate_data refuses sparse by name).
        tags.input_tags.sparse = False
        return tags


def _common_docstring(kind):
    return f"""
    Parameters
    ----------
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose,
    warm_start, momentum, nesterovs_momentum, early_stopping,
    validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change
        As in sklearn.neural_network.{kind}, with the same defaults and
        meanings. solver is 'adam' or 'sgd' ('lbfgs' raises ValueError).
        warm_start=True keeps the optimizer's moments (scikit-learn resets them).
    dropout : float in [0, 1), default=0.0
        Inverted dropout after every hidden activation, in training only.
    dtype : np.float32 or np.float64, default=np.float32
        The precision of the weights and of every computation; X is converted
        to it once (a float32 X with the default is used without a copy).
    n_threads : int or None, default=None
        Cap fastnn's threads during fit and predict (None: fastnn's setting).

    Attributes
    ----------
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_,
    t_, coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_,
    n_layers_, n_outputs_, out_activation_
        As in scikit-learn: coefs_[i] has shape (units of layer i, units of
        layer i + 1); they are the live weights of the network, in `dtype`.

    Methods
    -------
    partial_fit runs one epoch, keeping the optimizer's state; with
    early_stopping=True (which scikit-learn refuses) each call holds out
    validation_fraction of its data, scores it after the epoch and appends the
    score to validation_scores_ (best_validation_score_ is the best so far), and
    the weights stay the latest ones, for the caller to decide when to stop.
    """


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's MLPClassifier, trained by fastnn.

    Multiclass targets get a softmax output and the log loss; binary and
    multilabel (indicator matrix) targets get logistic outputs and the binary
    log loss, as in scikit-learn.
    """

    _parameter_constraints = {**_BaseMLP._parameter_constraints,
                              "label_smoothing": [Interval(Real, 0, 1, closed="both")]}
    _score_function = staticmethod(accuracy_score)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, dropout=0.0, label_smoothing=0.0, dtype=np.float32,
                 n_threads=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.label_smoothing = label_smoothing
        self.dtype = dtype
        self.n_threads = n_threads

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y = validate_data(self, X, y, multi_output=True, dtype=dtype, order="C", reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the "
                                     f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    def _out_activation(self, Y):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _train_targets(self, Y):
        """Class indices for the fused softmax cross-entropy, else the indicator matrix as floats."""
        if self.out_activation_ == "softmax":
            return Y.argmax(axis=1)
        return Y.astype(self.coefs_[0].dtype)

    def _decode(self, Y):
        return self._label_binarizer.inverse_transform(Y)

    def fit(self, X, y, sample_weight=None):
        """Fit the network to X (n_samples, n_features) and class labels y
        (n_samples,) or a label indicator matrix (n_samples, n_classes)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), keeping the optimizer's state. The first call
        needs `classes`, every label y can ever hold (as in scikit-learn)."""
        if classes is not None and hasattr(self, "classes_"):
            if not np.array_equal(self.classes_, unique_labels(classes)):
                raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                                 f"partial_fit, was: {self.classes_!r}")
        elif not hasattr(self, "classes_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y if type_of_target(y).startswith("multilabel") else classes)
            self.classes_ = self._label_binarizer.classes_
        return self._fit(X, y, sample_weight, incremental=True)

    def _predict(self, X, check_input=True):
        y_pred = self._outputs(X, check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def predict(self, X):
        """Class labels (or a label indicator matrix for multilabel targets)."""
        return self._predict(X)

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes)."""
        y_pred = self._outputs(X)
        if self.n_outputs_ == 1:
            p = y_pred.ravel()
            return np.vstack([1 - p, p]).T
        return y_pred

    def predict_log_proba(self, X):
        """log(predict_proba(X)), computed from the logits: finite where the probability underflows."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=self.coefs_[0].dtype, order="C")
        with _threads(self.n_threads):
            z = self._trainer.predict(X)
        if self.out_activation_ == "softmax":
            return F.log_softmax(z)
        z = z.ravel() if self.n_outputs_ == 1 else z
        # log(sigmoid(z)) = -log(1 + exp(-z)), and log(1 - sigmoid(z)) = -log(1 + exp(z)).
        log_p, log_q = -np.logaddexp(0, -z), -np.logaddexp(0, z)
        return np.vstack([log_q, log_p]).T if self.n_outputs_ == 1 else log_p

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


MLPClassifier.__doc__ += _common_docstring("MLPClassifier") + """
    label_smoothing : float in [0, 1], default=0.0
        Mixes the targets with the uniform distribution (torch's meaning).
"""


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's MLPRegressor, trained by fastnn.

    loss='squared_error' (identity output) or 'poisson' (exp output); one or
    several targets.
    """

    _parameter_constraints = {**_BaseMLP._parameter_constraints,
                              "loss": [StrOptions({"squared_error", "poisson"})]}
    _score_function = staticmethod(r2_score)

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, dropout=0.0, dtype=np.float32, n_threads=None):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.dtype = dtype
        self.n_threads = n_threads

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=dtype, order="C", reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError("loss='poisson' requires non-negative y")
        return X, np.ascontiguousarray(y.reshape(y.shape[0], -1), dtype=dtype)

    def _out_activation(self, Y):
        return "exp" if self.loss == "poisson" else "identity"

    def _train_targets(self, Y):
        return Y

    def _decode(self, Y):
        return Y.ravel() if Y.shape[1] == 1 else Y

    def fit(self, X, y, sample_weight=None):
        """Fit the network to X (n_samples, n_features) and targets y (n_samples,) or (n_samples, n_targets)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), keeping the optimizer's state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _predict(self, X, check_input=True):
        # float64 predictions, as scikit-learn's regressors return (the network computes in `dtype`).
        y_pred = self._outputs(X, check_input).astype(np.float64)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    def predict(self, X):
        """Predicted targets, (n_samples,) or (n_samples, n_targets)."""
        return self._predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


MLPRegressor.__doc__ += """
    loss : {'squared_error', 'poisson'}, default='squared_error'
        As in sklearn.neural_network.MLPRegressor.
""" + _common_docstring("MLPRegressor")
