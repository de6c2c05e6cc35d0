"""fastnn.MLPClassifier through its public, scikit-learn style API only
(fit, predict, predict_proba and the fitted attributes): predict agrees with
predict_proba, and early stopping ends on the best validation epoch's weights."""
import numpy as np

import fastnn


def blobs(n=400, classes=3, features=10, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)) * 3
    labels = rng.integers(0, classes, n)
    return (centers[labels] + spread * rng.standard_normal((n, features))).astype(np.float32), labels


def test_predict_is_the_most_probable_class_of_predict_proba():
    x, y = blobs(spread=2.5)  # overlapping clusters: many rows are not certain
    names = np.array(["ant", "bee", "cat"])[y]
    clf = fastnn.MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(x, names)
    proba = clf.predict_proba(x)
    assert proba.shape == (400, 3)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert list(clf.classes_) == ["ant", "bee", "cat"]  # the column order of predict_proba
    np.testing.assert_array_equal(clf.predict(x), clf.classes_[proba.argmax(axis=1)])
    assert np.mean(proba.max(axis=1) < 0.9) > 0.05, "a test where every row is certain would check little"


def test_early_stopping_ends_on_the_best_epochs_weights():
    """Fitted with early stopping, the classifier predicts exactly as one fitted
    with the same settings for only as many epochs as it took to reach its best
    validation score: the later epochs' weights were discarded."""
    x, y = blobs(n=600, spread=2.0)
    settings = dict(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=4, random_state=0,
                    learning_rate_init=3e-2)
    stopped = fastnn.MLPClassifier(max_iter=200, **settings).fit(x, y)
    scores = list(stopped.validation_scores_)
    best_epoch = int(np.argmax(scores)) + 1  # the first epoch with the best score
    assert len(scores) == stopped.n_iter_ and stopped.n_iter_ < 200
    assert stopped.n_iter_ > best_epoch, "training went on past the best epoch"
    assert stopped.best_validation_score_ == max(scores)
    at_best = fastnn.MLPClassifier(max_iter=best_epoch, **settings).fit(x, y)
    assert at_best.validation_scores_ == scores[:best_epoch]  # the same split and the same epochs
    np.testing.assert_array_equal(stopped.predict_proba(x), at_best.predict_proba(x))
