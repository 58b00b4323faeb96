"""Naive Bayes from summed per-partition counts equals scikit-learn's fit on all the rows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.naive_bayes import ComplementNB, MultinomialNB

from runner.batch.naive_bayes import add_counts, class_feature_counts, naive_bayes_from_counts

CLASSES = ["a", "b", "c", "d"]  # "d" never occurs in the training rows


def data(seed=0, n=600, d=300):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.05, format="csr", random_state=seed)
    X.data *= 3
    y = np.asarray(CLASSES[:3], dtype=object)[rng.integers(0, 3, n)]
    return X, y


@pytest.mark.parametrize(("variant", "cls"), [("multinomial", MultinomialNB),
                                              ("complement", ComplementNB)])
@pytest.mark.parametrize("alpha", [1.0, 0.01])
def test_summed_counts_equal_single_fit(variant, cls, alpha):
    X, y = data()
    cuts = [0, 130, 131, 400, 600]  # uneven partitions, one with a single row
    counts = [class_feature_counts({"X_train": X[a:b], "y_train": y[a:b]}, CLASSES)
              for a, b in zip(cuts, cuts[1:], strict=False)]
    summed = add_counts(add_counts(*counts[:2]), add_counts(*counts[2:]))
    ours = naive_bayes_from_counts(summed, CLASSES, variant, alpha)
    ref = cls(alpha=alpha).fit(X, y)
    assert list(ours.classes_) == list(ref.classes_) == ["a", "b", "c"]
    np.testing.assert_allclose(ours.feature_count_, ref.feature_count_, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(ours.class_count_, ref.class_count_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.feature_log_prob_, ref.feature_log_prob_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.class_log_prior_, ref.class_log_prior_, rtol=0, atol=1e-9)
    Xt, _ = data(seed=1, n=200)
    np.testing.assert_allclose(ours.predict_log_proba(Xt), ref.predict_log_proba(Xt), atol=1e-9)
    assert (ours.predict(Xt) == ref.predict(Xt)).all()


def test_negative_features_are_refused():
    X = sp.csr_matrix(np.array([[1.0, -1.0], [0.0, 2.0]]))
    with pytest.raises(ValueError, match="alternate_sign: false"):
        class_feature_counts({"X_train": X, "y_train": np.array(["a", "b"], dtype=object)},
                             ["a", "b"])
