"""Parallel SGD: one model per worker per epoch, then the workers' models mixed (worker side).

Each epoch every worker starts from the same mixed weights and streams the partitions it holds
(data locality: nothing moves) through one ``SGDClassifier.partial_fit``, partitions and rows in
a shuffled order; the workers' weights are then averaged, weighted by rows, in a tree of
``mix_sum`` tasks (iterative parameter mixing, McDonald, Hall & Mann 2010). So the models mixed
are as many as the workers, not the partitions: accuracy does not fall as a corpus is cut into
more partitions, and the weights in flight per epoch are one k x n_features matrix per worker.
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


# float64 copies of the k x n_features weights a worker holds at once while training: the
# classifier's, the mixed state it starts from and the tree's sums (with their float32 inputs)
TRAINING_COPIES = 3
# distributed pauses a worker at 80 % of its limit and the interpreter needs its own share
MEMORY_BUDGET = 0.8


def training_memory(n_classes: int, n_features: int, candidates: int = 1) -> int:
    """Bytes a worker needs for the weights while training: ``TRAINING_COPIES`` float64 copies,
    plus the float32 state of every further search candidate (their states live side by side).
    Two classes have one row of weights, as in scikit-learn."""
    rows = 1 if n_classes == 2 else n_classes
    copy = rows * n_features * 8
    return TRAINING_COPIES * copy + (candidates - 1) * copy // 2


def largest_fitting_features(n_classes: int, memory_limit: int, candidates: int = 1) -> int | None:
    """The largest power-of-two ``n_features`` (at least 16) whose training fits the budget."""
    n = 2**24
    while n >= 16:
        if training_memory(n_classes, n, candidates) <= MEMORY_BUDGET * memory_limit:
            return n
        n //= 2
    return None


def train_partitions(parts, state: dict | None, classes: list[str], sgd_params: dict,
                     epoch: int, index: int) -> dict:
    """One epoch over the training rows of ``parts`` (this worker's partitions: a list, or
    ``parts.LazyParts`` that builds each one when it is reached), from the mixed ``state``:
    partitions in a shuffled order, stacked into batches of at least ``parts.BATCH_ROWS`` rows,
    rows shuffled within each batch."""
    from runner.batch.parts import batches

    seed = int(sgd_params.get("random_state") or 0)
    rng = np.random.default_rng([seed, epoch, index])
    labels = np.asarray(classes, dtype=object)
    clf = make_classifier(state, classes, sgd_params)
    n = 0
    for X, y in batches(parts, rng.permutation(len(parts)), "X_train", "y_train"):
        order = rng.permutation(X.shape[0])
        clf.partial_fit(X[order], y[order], classes=labels)
        n += X.shape[0]
    if n == 0:
        return {"n_rows": 0}
    # float32 halves what travels to the mixing; the next epoch computes in float64 again
    return {"coef": clf.coef_.astype(np.float32), "intercept": clf.intercept_, "t": clf.t_,
            "n_rows": n}


def mix_sum(*results: dict) -> dict:
    """Row-weighted sums of workers' weights (one node of the mixing tree; its inputs are
    results of ``train_partitions`` or of other ``mix_sum`` nodes)."""
    done = [r for r in results if r["n_rows"] > 0]
    if not done:
        return {"n_rows": 0}
    coef = np.zeros(done[0]["coef"].shape, dtype=np.float64)
    intercept = np.zeros(done[0]["intercept"].shape, dtype=np.float64)
    for r in done:
        summed = r.get("summed", False)  # a tree node's sums are already weighted
        w = 1.0 if summed else float(r["n_rows"])
        coef += w * r["coef"]
        intercept += w * r["intercept"]
    return {"coef": coef, "intercept": intercept, "t": max(r["t"] for r in done),
            "n_rows": sum(r["n_rows"] for r in done), "summed": True}


def mix_finish(acc: dict, previous: dict | None) -> dict:
    """The mixed state: the tree's sums divided by the rows. The learning-rate schedule goes on
    from the furthest worker."""
    if acc["n_rows"] == 0:
        raise ValueError("no partition had training rows")
    total = float(acc["n_rows"])
    if not acc.get("summed"):  # a single worker: nothing was summed
        acc = mix_sum(acc)
    epochs = (previous or {}).get("epochs", 0) + 1
    return {"coef": (acc["coef"] / total).astype(np.float32), "intercept": acc["intercept"] / total,
            "t": acc["t"], "epochs": epochs, "n_rows": acc["n_rows"]}
