"""Evaluation (worker side): confusion matrices per partition, summed; metrics from the sum."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix


def confusion_part(part: dict, clf, classes: list[str]) -> np.ndarray:
    """Confusion matrix (rows: true, columns: predicted) of one partition's test rows, for a
    fitted scikit-learn classifier ``clf``."""
    X, y = part["X_test"], part["y_test"]
    k = len(classes)
    if X.shape[0] == 0:
        return np.zeros((k, k), dtype=np.int64)
    pred = clf.predict(X)
    return confusion_matrix(y, pred, labels=np.asarray(classes, dtype=object)).astype(np.int64)


def confusion_parts(parts, clf, classes: list[str]) -> np.ndarray:
    """``confusion_part`` summed over a worker's partitions, predicted in batches (one
    prediction per partition would copy the k x n_features weights for each)."""
    from runner.batch.parts import batches

    k = len(classes)
    cm = np.zeros((k, k), dtype=np.int64)
    for X, y in batches(parts, range(len(parts)), "X_test", "y_test"):
        cm += confusion_part({"X_test": X, "y_test": y}, clf, classes)
    return cm


def metrics_from_confusion(cm: np.ndarray, classes: list[str]) -> dict:
    """accuracy, macro_f1 and per-class precision/recall/f1/support.

    As scikit-learn's default, macro-F1 averages over the classes that occur in the test rows
    or in the predictions; a class with no predictions has precision 0.
    """
    cm = np.asarray(cm, dtype=np.int64)
    total = int(cm.sum())
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    present = (support > 0) | (predicted > 0)
    per_class = {
        str(c): {"precision": float(precision[i]), "recall": float(recall[i]),
                 "f1": float(f1[i]), "support": int(support[i])}
        for i, c in enumerate(classes) if present[i]
    }
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "majority_rate": float(support.max() / total) if total else 0.0,
        "per_class": per_class,
    }
