"""Parallel SGD by iterative parameter mixing (worker side, plus the mixing step).

Each epoch every partition starts from the same mixed weights, runs one shuffled pass of
``SGDClassifier.partial_fit`` over its own training rows and returns its weights; the weights are
averaged, weighted by rows (McDonald, Hall & Mann 2010, "Distributed training strategies for the
structured perceptron"). The mixing runs as a task too, so the weight matrices travel between
workers and reach the client once, at the end.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import SGDClassifier


def make_classifier(state: dict | None, classes: list[str], sgd_params: dict) -> SGDClassifier:
    """An SGDClassifier that continues from ``state`` (coef, intercept, t) or starts fresh."""
    clf = SGDClassifier(**sgd_params)
    if state is not None:
        clf.classes_ = np.asarray(classes, dtype=object)
        clf.coef_ = np.array(state["coef"], dtype=np.float64, order="C", copy=True)
        clf.intercept_ = np.array(state["intercept"], dtype=np.float64, copy=True)
        clf.t_ = float(state["t"])
        clf.n_features_in_ = clf.coef_.shape[1]
        clf.n_iter_ = int(state.get("epochs", 0))
    return clf


def train_partition(part: dict, state: dict | None, classes: list[str], sgd_params: dict,
                    epoch: int, index: int) -> dict:
    """One epoch over one partition's training rows, from the mixed ``state``."""
    X, y = part["X_train"], part["y_train"]
    n = X.shape[0]
    if n == 0:
        return {"n_rows": 0}
    seed = int(sgd_params.get("random_state") or 0)
    order = np.random.default_rng([seed, epoch, index]).permutation(n)
    clf = make_classifier(state, classes, sgd_params)
    clf.partial_fit(X[order], y[order], classes=np.asarray(classes, dtype=object))
    # float32 halves what travels between workers each epoch (k x n_features weights); the
    # mixing and the next epoch compute in float64 again
    return {"coef": clf.coef_.astype(np.float32), "intercept": clf.intercept_, "t": clf.t_,
            "n_rows": n}


def mix(results: list[dict], previous: dict | None) -> dict:
    """Row-weighted average of the partitions' weights (the parameter-mixing step)."""
    done = [r for r in results if r["n_rows"] > 0]
    total = sum(r["n_rows"] for r in done)
    coef = np.zeros(done[0]["coef"].shape, dtype=np.float64)
    intercept = np.zeros_like(done[0]["intercept"])
    for r in done:
        w = r["n_rows"] / total
        coef += w * r["coef"]
        intercept += w * r["intercept"]
    # the learning-rate schedule advances by one epoch's worth of this model's updates
    t = max(r["t"] for r in done)
    epochs = (previous or {}).get("epochs", 0) + 1
    return {"coef": coef.astype(np.float32), "intercept": intercept, "t": t, "epochs": epochs,
            "n_rows": total}


def mix_add(acc: dict | None, result: dict, total: int) -> dict | None:
    """``mix`` as a running sum, one partition at a time, in partition order: the same floating
    operations in the same order (so the same bits), but each partition's weights can be
    dropped as soon as they are added instead of all waiting for one mixing task. ``total``:
    the training rows of all partitions (known on the client from the counts)."""
    n = result["n_rows"]
    if n == 0:
        return acc
    w = n / total
    if acc is None:
        acc = {"coef": np.zeros(result["coef"].shape, dtype=np.float64),
               "intercept": np.zeros_like(result["intercept"]), "t": result["t"], "n_rows": 0}
    # new arrays, never the stored input changed in place
    return {"coef": acc["coef"] + w * result["coef"],
            "intercept": acc["intercept"] + w * result["intercept"],
            "t": max(acc["t"], result["t"]), "n_rows": acc["n_rows"] + n}


def mix_finish(acc: dict, previous: dict | None) -> dict:
    """The mixed state from ``mix_add``'s running sum (as ``mix`` returns it)."""
    epochs = (previous or {}).get("epochs", 0) + 1
    return {"coef": acc["coef"].astype(np.float32), "intercept": acc["intercept"], "t": acc["t"],
            "epochs": epochs, "n_rows": acc["n_rows"]}
