"""fastnn.MLPClassifier / MLPRegressor as scikit-learn estimators: scikit-learn's
own estimator checks, its model-selection tools, and parity with
sklearn.neural_network on the same settings, data and seed."""
import os
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn import neural_network  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import (load_digits, make_blobs, make_classification,  # noqa: E402
                              make_multilabel_classification, make_regression)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastnn  # noqa: E402
from fastnn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are small: one thread is as fast and keeps the file quick on a busy machine."""
    before = fastnn.info()["threads"]
    fastnn.set_num_threads(1)
    yield
    fastnn.set_num_threads(before)


def _expected_failed_checks(estimator):
    if np.dtype(estimator.dtype) == np.float32:
        # Weighted sums and repeated rows round differently in float32 (a few ulp, below
        # the check's rtol=1e-7); the float64 instances pass this check, and
        # test_sample_weight_is_repetition_in_float32 checks float32 at its precision.
        return {"check_sample_weight_equivalence_on_dense_data": "float32 rounding, a few ulp"}
    return {}


# max_iter=100, as scikit-learn checks its own MLPs.
@parametrize_with_checks(
    [MLPClassifier(max_iter=100), MLPRegressor(max_iter=100),
     MLPClassifier(max_iter=100, dtype=np.float64), MLPRegressor(max_iter=100, dtype=np.float64)],
    expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_import_needs_no_sklearn_and_the_estimators_name_the_extra():
    code = ("import sys\n"
            "sys.modules['sklearn'] = None  # makes `import sklearn` raise ImportError\n"
            "import fastnn\n"
            "fastnn.Trainer, fastnn.nn\n"
            "assert sys.modules['sklearn'] is None\n"
            "for name in ('MLPClassifier', 'MLPRegressor'):\n"
            "    try:\n"
            "        getattr(fastnn, name)\n"
            "    except ImportError as exc:\n"
            "        assert \"pip install 'fastnn[sklearn]'\" in str(exc), exc\n"
            "    else:\n"
            "        raise AssertionError(name + ' imported without scikit-learn')\n"
            "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "python")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_public_names():
    assert "MLPClassifier" in fastnn.__all__ and "MLPRegressor" in fastnn.__all__
    assert fastnn.MLPClassifier.__module__ == "fastnn.sklearn"
    assert not hasattr(fastnn.train, "MLPClassifier")


def _digits(dtype=np.float64):
    X, y = load_digits(return_X_y=True)
    return train_test_split((X / 16).astype(dtype), y, test_size=0.25, random_state=0)


def test_digits_parity_with_sklearn():
    X_train, X_test, y_train, y_test = _digits()
    settings = dict(hidden_layer_sizes=(64,), max_iter=30, random_state=0)
    ours = MLPClassifier(**settings).fit(X_train, y_train)
    theirs = neural_network.MLPClassifier(**settings).fit(X_train, y_train)
    assert ours.score(X_test, y_test) >= theirs.score(X_test, y_test) - 0.01
    assert ours.score(X_test, y_test) > 0.93
    assert len(ours.loss_curve_) == len(theirs.loss_curve_) == ours.n_iter_ == 30
    # The same initial weights and batches: float32 follows float64's curve closely.
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-2)
    assert ours.loss_curve_[-1] < 0.2 * ours.loss_curve_[0]
    assert np.all(np.diff(ours.loss_curve_[:10]) < 0)
    assert ours.loss_ == ours.loss_curve_[-1] and ours.best_loss_ == min(ours.loss_curve_)
    assert ours.t_ == theirs.t_ == 30 * X_train.shape[0]
    assert ours.n_layers_ == theirs.n_layers_ == 3 and ours.n_outputs_ == theirs.n_outputs_ == 10
    assert ours.out_activation_ == theirs.out_activation_ == "softmax"
    assert [c.shape for c in ours.coefs_] == [c.shape for c in theirs.coefs_] == [(64, 64), (64, 10)]
    assert [b.shape for b in ours.intercepts_] == [(64,), (10,)]
    assert ours.coefs_[0].dtype == np.float32


@pytest.mark.parametrize("settings", [
    dict(solver="adam", alpha=1.0, activation="tanh"),
    dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5, momentum=0.9, activation="logistic"),
    dict(solver="sgd", learning_rate="constant", nesterovs_momentum=False, batch_size=64, shuffle=False),
    dict(solver="adam", activation="identity", early_stopping=True, n_iter_no_change=3),
])
def test_training_follows_sklearn_in_float64(settings):
    """Same init, batches, penalty and update: the loss curves agree to ~1e-4."""
    X_train, _, y_train, _ = _digits()
    common = dict(hidden_layer_sizes=(32,), max_iter=8, random_state=0, **settings)
    ours = MLPClassifier(dtype=np.float64, **common).fit(X_train, y_train)
    theirs = neural_network.MLPClassifier(**common).fit(X_train, y_train)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-4)
    if settings.get("early_stopping"):
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, atol=1e-12)
        assert ours.best_validation_score_ == theirs.best_validation_score_ and ours.best_loss_ is None
    for ours_coef, their_coef in zip(ours.coefs_, theirs.coefs_):
        np.testing.assert_allclose(ours_coef, their_coef, rtol=1e-4, atol=1e-6)


def test_regressor_parity_with_sklearn():
    X, y = make_regression(n_samples=800, n_features=20, noise=5.0, random_state=0)
    y = y / y.std()
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    settings = dict(hidden_layer_sizes=(64,), max_iter=60, random_state=0)
    ours = MLPRegressor(**settings).fit(X_train, y_train)
    theirs = neural_network.MLPRegressor(**settings).fit(X_train, y_train)
    assert ours.score(X_test, y_test) >= theirs.score(X_test, y_test) - 0.01
    assert ours.score(X_test, y_test) > 0.9
    assert len(ours.loss_curve_) == len(theirs.loss_curve_)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=2e-2)
    assert ours.out_activation_ == "identity" and ours.predict(X_test).dtype == np.float64


def test_poisson_regressor_follows_sklearn():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 5))
    y = rng.poisson(np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1]))
    settings = dict(loss="poisson", hidden_layer_sizes=(16,), max_iter=10, random_state=0)
    ours = MLPRegressor(dtype=np.float64, **settings).fit(X, y)
    theirs = neural_network.MLPRegressor(**settings).fit(X, y)
    assert ours.out_activation_ == "exp"
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-3)


def test_mnist_subset_parity_with_sklearn():
    (x, t), (x_test, t_test) = fastnn.datasets.load_mnist()
    x, t, x_test, t_test = x[:2000], t[:2000], x_test[:2000], t_test[:2000]
    settings = dict(hidden_layer_sizes=(100,), max_iter=5, random_state=0)
    ours = MLPClassifier(**settings).fit(x, t)
    theirs = neural_network.MLPClassifier(**settings).fit(x, t)
    assert ours.score(x_test, t_test) >= theirs.score(x_test, t_test) - 0.01
    assert ours.score(x_test, t_test) > 0.8
    assert len(ours.loss_curve_) == len(theirs.loss_curve_) == 5
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=2e-2)


def test_multilabel_targets_get_logistic_outputs():
    X, Y = make_multilabel_classification(n_samples=300, n_features=10, n_classes=4, random_state=0)
    settings = dict(hidden_layer_sizes=(32,), max_iter=20, random_state=0)
    ours = MLPClassifier(dtype=np.float64, **settings).fit(X, Y)
    theirs = neural_network.MLPClassifier(**settings).fit(X, Y)
    assert ours.out_activation_ == "logistic" and ours.n_outputs_ == 4
    np.testing.assert_array_equal(ours.classes_, [0, 1, 2, 3])
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-4)
    assert ours.predict(X).shape == Y.shape and set(np.unique(ours.predict(X))) <= {0, 1}
    proba = ours.predict_proba(X)
    assert proba.shape == Y.shape and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(ours.predict_log_proba(X), np.log(proba), rtol=1e-9, atol=1e-12)


def test_multioutput_regression():
    X, Y = make_regression(n_samples=300, n_features=8, n_targets=3, random_state=0)
    Y = Y / Y.std(axis=0)
    settings = dict(hidden_layer_sizes=(32,), max_iter=15, random_state=0)
    ours = MLPRegressor(dtype=np.float64, **settings).fit(X, Y)
    theirs = neural_network.MLPRegressor(**settings).fit(X, Y)
    assert ours.predict(X).shape == (300, 3) and ours.n_outputs_ == 3
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-4)


def test_binary_string_and_non_contiguous_labels():
    X, y = make_blobs(n_samples=300, n_features=8, centers=3, random_state=0)
    for labels in (np.array(["cat", "dog", "emu"]), np.array([3, 10, 42])):
        clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0).fit(X, labels[y])
        np.testing.assert_array_equal(clf.classes_, labels)
        assert set(clf.predict(X)) <= set(labels) and clf.score(X, labels[y]) > 0.95
        assert clf.predict_proba(X).shape == (300, 3)
    binary = MLPClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0).fit(X, np.where(y == 0, "no", "yes"))
    assert binary.out_activation_ == "logistic" and binary.n_outputs_ == 1
    proba = binary.predict_proba(X)
    assert proba.shape == (300, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(binary.predict(X), np.where(proba[:, 1] > 0.5, "yes", "no"))


def test_predict_log_proba_stays_finite_where_proba_underflows():
    X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(X, y)
    far = X[:3] * 1e4
    log_proba = clf.predict_log_proba(far)
    assert np.all(np.isfinite(log_proba))
    np.testing.assert_allclose(np.exp(log_proba), clf.predict_proba(far), atol=1e-6)


def test_model_selection_tools():
    X, y = make_classification(n_samples=300, n_features=10, class_sep=2.0, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, learning_rate_init=0.01, random_state=0)
    scores = cross_val_score(clf, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
    pipe = make_pipeline(StandardScaler(), clone(clf)).fit(X, y)
    assert pipe.score(X, y) > 0.85
    search = GridSearchCV(clf, {"hidden_layer_sizes": [(4,), (16,)], "alpha": [1e-4, 1e-2]}, cv=2).fit(X, y)
    assert search.best_params_["hidden_layer_sizes"] in [(4,), (16,)]
    assert isinstance(search.best_estimator_, MLPClassifier) and hasattr(search.best_estimator_, "coefs_")
    regression = cross_val_score(MLPRegressor(max_iter=30, random_state=0), *make_regression(200, 5, random_state=0),
                                 cv=2)
    assert regression.shape == (2,)


NEW_VALUES = {
    "loss": "poisson", "hidden_layer_sizes": (7, 5), "activation": "tanh", "solver": "sgd", "alpha": 0.5,
    "batch_size": 17, "learning_rate": "adaptive", "learning_rate_init": 0.01, "power_t": 0.25, "max_iter": 3,
    "shuffle": False, "random_state": 5, "tol": 1e-3, "verbose": True, "warm_start": True, "momentum": 0.5,
    "nesterovs_momentum": False, "early_stopping": True, "validation_fraction": 0.2, "beta_1": 0.8, "beta_2": 0.99,
    "epsilon": 1e-6, "n_iter_no_change": 4, "dropout": 0.1, "label_smoothing": 0.1, "dtype": np.float64,
    "n_threads": 1,
}


@pytest.mark.parametrize("cls, reference", [(MLPClassifier, neural_network.MLPClassifier),
                                            (MLPRegressor, neural_network.MLPRegressor)])
def test_every_parameter_round_trips_with_sklearns_defaults(cls, reference):
    params = cls().get_params()
    theirs = reference().get_params()
    shared = set(theirs) - {"max_fun"}
    assert shared <= set(params)
    assert {name: params[name] for name in shared} == {name: theirs[name] for name in shared}
    assert set(params) - shared == {"dropout", "dtype", "n_threads"} | ({"label_smoothing"} if cls is MLPClassifier
                                                                       else set())
    for name in params:
        est = cls().set_params(**{name: NEW_VALUES[name]})
        assert est.get_params()[name] == NEW_VALUES[name]
        assert clone(est).get_params()[name] == NEW_VALUES[name]


def test_parameter_errors():
    X, y = make_classification(n_samples=50, n_features=4, random_state=0)
    with pytest.raises(ValueError, match="lbfgs"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(4, 0)).fit(X, y)
    with pytest.raises(ValueError, match="dtype"):
        MLPClassifier(dtype=np.float16).fit(X, y)
    with pytest.raises(ValueError, match="label_smoothing"):
        MLPClassifier(label_smoothing=1.5).fit(X, y)
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="[Ss]parse"):
        MLPClassifier().fit(scipy_sparse.csr_matrix(X), y)
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X, y)


def test_warm_start_and_partial_fit_keep_the_adam_moments():
    """Without shuffling, epochs split over calls are the epochs of one fit: the
    optimizer's state carries over (scikit-learn restarts Adam on a warm start)."""
    X, y = make_classification(n_samples=240, n_features=10, random_state=0)
    settings = dict(hidden_layer_sizes=(16,), shuffle=False, random_state=0)
    one_fit = MLPClassifier(max_iter=3, **settings).fit(X, y)
    warm = MLPClassifier(max_iter=1, warm_start=True, **settings)
    partial = MLPClassifier(**settings)
    for _ in range(3):
        warm.fit(X, y)
        partial.partial_fit(X, y, classes=[0, 1])
    for other in (warm, partial):
        np.testing.assert_allclose(other.loss_curve_, one_fit.loss_curve_, rtol=1e-6)
        for a, b in zip(other.coefs_, one_fit.coefs_):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert other.t_ == one_fit.t_ == 3 * 240
    sk_warm = neural_network.MLPClassifier(max_iter=1, warm_start=True, **settings)
    for _ in range(3):
        sk_warm.fit(X, y)
    # The contrast: scikit-learn's restarted moments take another path.
    assert not np.allclose(sk_warm.coefs_[0], one_fit.coefs_[0], rtol=1e-2, atol=1e-4)


def test_partial_fit_with_early_stopping():
    X, y = make_classification(n_samples=400, n_features=10, class_sep=2.0, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(16,), early_stopping=True, learning_rate_init=0.01, random_state=0)
    for _ in range(6):
        clf.partial_fit(X, y, classes=[0, 1])
    assert len(clf.validation_scores_) == 6 == len(clf.loss_curve_)
    assert clf.best_validation_score_ == max(clf.validation_scores_) > 0.7
    with pytest.raises(ValueError):
        neural_network.MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1])


def test_fit_with_early_stopping_restores_the_best_weights():
    X, y = make_classification(n_samples=400, n_features=10, flip_y=0.2, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(64,), early_stopping=True, n_iter_no_change=3, max_iter=300,
                        learning_rate_init=0.01, random_state=0).fit(X, y)
    assert clf.n_iter_ < 300 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_) > clf.validation_scores_[-1]
    # The held-out split, drawn as scikit-learn draws it: after the initial weights, from the same RandomState.
    random_state = np.random.RandomState(0)
    for shape in [(10, 64), (64,), (64, 1), (1,)]:
        random_state.uniform(size=shape)
    _, X_val, _, y_val = train_test_split(X, y, test_size=0.1, random_state=random_state, stratify=y[:, None])
    assert clf.score(X_val, y_val) == clf.best_validation_score_


def test_sample_weight_is_repetition_in_float32():
    rng = np.random.RandomState(0)
    X, y = rng.rand(15, 30), rng.randint(0, 3, 15)
    weights = rng.randint(0, 5, 15)
    weights[0] = 1
    settings = dict(hidden_layer_sizes=(16,), max_iter=50, random_state=0)
    weighted = MLPClassifier(**settings).fit(X, y, sample_weight=weights)
    repeated = MLPClassifier(**settings).fit(X.repeat(weights, axis=0), y.repeat(weights))
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), rtol=1e-4, atol=1e-6)


def test_float32_fit_makes_no_float64_copy_of_x():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20000, 200), dtype=np.float32)
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=1, random_state=0)
    tracemalloc.start()
    try:
        clf.fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 2, f"fit allocated {peak} bytes for a {X.nbytes}-byte X"
    assert all(c.dtype == np.float32 for c in clf.coefs_ + clf.intercepts_)
    assert clf.predict_proba(X[:5]).dtype == np.float32


def test_dropout_and_label_smoothing_train():
    X_train, X_test, y_train, y_test = _digits(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=20, dropout=0.2, label_smoothing=0.1,
                        random_state=0).fit(X_train, y_train)
    assert clf.score(X_test, y_test) > 0.9
    # Predictions run in eval mode: no dropout, so they repeat exactly.
    np.testing.assert_array_equal(clf.predict_proba(X_test), clf.predict_proba(X_test))


def test_feature_names_from_a_dataframe():
    pd = pytest.importorskip("pandas")
    X, y = make_classification(n_samples=100, n_features=3, n_informative=2, n_redundant=0, random_state=0)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0).fit(frame, y)
    np.testing.assert_array_equal(clf.feature_names_in_, ["a", "b", "c"])
    assert clf.n_features_in_ == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        clf.predict(frame)
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X)


def test_convergence_warning_and_verbose(capsys):
    X, y = make_classification(n_samples=100, n_features=4, random_state=0)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, verbose=True, random_state=0).fit(X, y)
    assert capsys.readouterr().out.count("Iteration ") == 2


def test_n_threads_caps_fastnn_during_fit_only():
    X, y = make_classification(n_samples=200, n_features=6, random_state=0)
    seen = []

    class Recording(MLPClassifier):
        def _score(self, X, y, sample_weight):
            seen.append(fastnn.info()["threads"])
            return super()._score(X, y, sample_weight)

    fastnn.set_num_threads(2)
    clf = Recording(hidden_layer_sizes=(8,), max_iter=3, early_stopping=True, n_threads=1, random_state=0).fit(X, y)
    assert seen == [1, 1, 1] and fastnn.info()["threads"] == 2
    reference = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, early_stopping=True, random_state=0).fit(X, y)
    np.testing.assert_allclose(clf.loss_curve_, reference.loss_curve_, rtol=1e-6)
