"""Exact naive Bayes on the cluster (worker side).

Naive Bayes is a sum: the fitted model depends on the data only through the class-feature count
matrix (the sum of each class's feature vectors) and the class counts. Each partition computes its
own (sparse) counts, the counts are summed (a tree of additions on the workers), and one
scikit-learn MultinomialNB or ComplementNB is built from the sums. The result equals a
single-process fit on all training rows up to floating-point rounding.

Counts must be non-negative: hashing with ``alternate_sign: false`` (the job checks this) or
TF-IDF weights.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.naive_bayes import ComplementNB, MultinomialNB

VARIANTS = {"multinomial": MultinomialNB, "complement": ComplementNB}


def class_feature_counts(part: dict, classes: list[str]) -> dict:
    """(k x n_features) sparse sum of the feature rows of each class, and rows per class."""
    X, y = part["X_train"], part["y_train"]
    k, n = len(classes), X.shape[0]
    if n and X.min() < 0:
        raise ValueError("naive_bayes needs non-negative features; set features.alternate_sign: "
                         "false in the job file")
    index = {c: i for i, c in enumerate(classes)}
    rows = np.fromiter((index[v] for v in y), dtype=np.int64, count=n)
    onehot = sp.csr_matrix((np.ones(n), (rows, np.arange(n))), shape=(k, n))
    return {"feature_count": (onehot @ X).tocsr(),
            "class_count": np.bincount(rows, minlength=k).astype(np.float64)}


def add_counts(*counts: dict) -> dict:
    """Sum of partitions' counts (one node of the reduction tree)."""
    return {"feature_count": sum((c["feature_count"] for c in counts[1:]),
                                 counts[0]["feature_count"]).tocsr(),
            "class_count": np.sum([c["class_count"] for c in counts], axis=0)}


def naive_bayes_from_counts(counts: dict, classes: list[str], variant: str, alpha: float):
    """A fitted MultinomialNB/ComplementNB whose counts are exactly ``counts``.

    Built through the public ``fit``: one row per class holding the class's mean feature vector,
    weighted by its row count, so ``feature_count_`` = weight x mean = the summed counts and
    ``class_count_`` = the row counts. Classes without training rows are left out, as a
    scikit-learn fit on the same rows would do.
    """
    class_count = np.asarray(counts["class_count"], dtype=np.float64)
    present = np.flatnonzero(class_count > 0)
    fc = sp.csr_matrix(counts["feature_count"])[present]
    means = sp.diags(1.0 / class_count[present]) @ fc
    labels = np.asarray(classes, dtype=object)[present]
    clf = VARIANTS[variant](alpha=alpha)
    clf.fit(means, labels, sample_weight=class_count[present])
    return clf
