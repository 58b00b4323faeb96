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


def make_classifier(state: dict | None, classes, sgd_params: dict,
                    averaged: bool = True) -> SGDClassifier:
    """An SGDClassifier that continues from ``state`` (coef, intercept, t) or starts fresh;
    ``classes``: the labels, sorted (or their codes while training). With ``averaged`` and a
    state that holds an average (``average``), the classifier has the averaged weights: the
    model a job keeps; training goes on from the plain ones."""
    # ``average`` is ours (``accumulate_average``): scikit-learn's partial_fit with average
    # mixes up the plain and averaged intercepts of more than two classes (1.9.1), so the
    # classifier itself never averages
    clf = SGDClassifier(**{k: v for k, v in sgd_params.items() if k != "average"})
    if state is not None:
        use_avg = averaged and state.get("avg_rows", 0) > 0
        # label strings stay objects (as scikit-learn keeps them); codes stay integers
        clf.classes_ = (classes if isinstance(classes, np.ndarray)
                        else np.asarray(classes, dtype=object))
        # a copy: partial_fit updates the weights in place, and the state may be shared by
        # other tasks on this worker
        clf.coef_ = np.array(state["avg_coef" if use_avg else "coef"], dtype=np.float32,
                             order="C", copy=True)
        clf.intercept_ = np.array(state["avg_intercept" if use_avg else "intercept"],
                                  dtype=np.float32, copy=True)
        clf.t_ = float(state["t"])
        clf.n_features_in_ = clf.coef_.shape[1]
        clf.n_iter_ = int(state.get("epochs", 0))
    return clf


def average_start(average: bool | int) -> int | None:
    """The row count (scikit-learn's ``t_ - 1``) from which weights are averaged; None: not
    averaged. ``average``: the job's (true: from the first row; N: from the N-th, as in
    scikit-learn)."""
    if average is False or average is None:
        return None
    return 0 if average is True else int(average)


def averaged_rows(state: dict) -> tuple[int, int]:
    """The rows whose batches' weights ``state``'s average covers (0: none), and the rows its
    schedule counted (scikit-learn's ``t_ - 1``: the furthest worker's, epoch after epoch)."""
    return int(state.get("avg_rows", 0)), int(state["t"] - 1)


class _Average:
    """A row-weighted running sum of the weights after each batch (ASGD, Polyak-Ruppert
    averaging, at the granularity of ``parts.BATCH_ROWS``-row batches rather than scikit-learn's
    every row). Sums, not means, so the workers' sums add up in the mixing tree; the epoch's
    first group carries the sum so far (``state``'s mean times its rows), so it is counted
    once."""

    def __init__(self, state: dict | None, carry: bool):
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.buf: np.ndarray | None = None
        self.rows = 0
        if carry and state is not None and state.get("avg_rows", 0) > 0:
            self.rows = int(state["avg_rows"])
            self.coef = np.array(state["avg_coef"], dtype=np.float32, copy=True)
            self.coef *= np.float32(self.rows)
            self.intercept = np.asarray(state["avg_intercept"], dtype=np.float64) * self.rows

    def add(self, clf: SGDClassifier, rows: int) -> None:
        if self.coef is None or self.intercept is None:
            self.coef = np.zeros(clf.coef_.shape, dtype=np.float32)
            self.intercept = np.zeros(clf.intercept_.shape, dtype=np.float64)
        if self.buf is None:
            self.buf = np.empty_like(self.coef)
        np.multiply(clf.coef_, np.float32(rows), out=self.buf, dtype=np.float32,
                    casting="same_kind")
        self.coef += self.buf
        self.intercept += rows * np.asarray(clf.intercept_, dtype=np.float64)
        self.rows += rows

    def fields(self) -> dict:
        if not self.rows:
            return {}
        return {"avg_coef": self.coef, "avg_intercept": self.intercept, "avg_rows": self.rows}


# the fewest training rows one mixed model sees in an epoch (pipeline_fit._parameter_mixing): with
# fewer, averaging many models of little data each falls behind one process (bench/workers.py,
# its --min-model-rows 1 lifts this floor to show it)
MIN_MODEL_ROWS = 10_000

# float32 copies of the k x n_features weights a worker may hold at once while training: the
# state it starts from, its classifier's, and where the mixing tree's root runs, the other
# workers' results, the sum and its scaling buffer
TRAINING_COPIES = 6
# with ``average``: the mean it starts from, its running sum and scaling buffer, and at the
# root the other workers' sums and the sum of sums
AVERAGE_COPIES = 6
WEIGHT_BYTES = 4  # float32
# distributed pauses a worker at 80 % of its limit and the interpreter needs its own share
MEMORY_BUDGET = 0.8


def training_memory(n_classes: int, n_features: int, candidates: int = 1) -> int:
    """Bytes a worker needs for the weights while training: ``TRAINING_COPIES`` float32 copies,
    plus the state of every further search candidate (their states live side by side).
    Two classes have one row of weights, as in scikit-learn."""
    rows = 1 if n_classes == 2 else n_classes
    copy = rows * n_features * WEIGHT_BYTES
    return TRAINING_COPIES * copy + (candidates - 1) * copy


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
    rows shuffled within each batch (by scikit-learn, with a seed of the epoch and batch)."""
    from runner.batch.parts import batches

    seed = int(sgd_params.get("random_state") or 0)
    rng = np.random.default_rng([seed, epoch, index])
    # labels as their positions in the sorted ``classes``: every partial_fit call sorts its
    # labels (class weights) and compares them once per class, which on strings cost more
    # than a tenth of the epoch; the order, and so the weights, are the same
    codes = np.arange(len(classes))
    code_of = {c: i for i, c in enumerate(classes)}
    weights = sgd_params.get("class_weight")
    if isinstance(weights, dict):  # by label in the job, by code inside training
        sgd_params = {**sgd_params, "class_weight": {code_of[c]: w for c, w in weights.items()}}
    clf = make_classifier(state, codes, sgd_params, averaged=False)
    t_start = clf.t_ if state is not None else 1.0  # scikit-learn starts a fresh model at 1
    start = average_start(sgd_params.get("average", False))
    avg = _Average(state, carry=index == 0) if start is not None else None
    n = 0
    for X, y in batches(parts, rng.permutation(len(parts)), "X_train", "y_train"):
        # partial_fit shuffles the rows itself (shuffle=True) with a seed drawn from
        # random_state: a seed per batch gives every batch and epoch its own order, and the
        # rows are not copied to be shuffled
        clf.random_state = int(rng.integers(2**31 - 1))
        clf.partial_fit(X, np.fromiter((code_of[v] for v in y), dtype=np.int64, count=len(y)),
                        classes=codes)
        n += X.shape[0]
        if avg is not None and clf.t_ - 1 >= start:
            avg.add(clf, X.shape[0])
    averaged = avg.fields() if avg is not None else {}
    if n == 0:
        # what this task was given, for the error at the root if no worker had rows
        return {"n_rows": 0, "n_parts": len(parts), "epoch": epoch, "group": index, **averaged}
    return {"coef": clf.coef_, "intercept": clf.intercept_, "t0": t_start,
            "t_steps": clf.t_ - t_start, "n_rows": n, **averaged}


def _sum_averages(results: tuple[dict, ...]) -> dict:
    """The running sums of averaged weights (``_Average``) of ``results``, added up."""
    held = [r for r in results if r.get("avg_rows", 0) > 0]
    if not held:
        return {}
    coef = np.array(held[0]["avg_coef"], dtype=np.float32, copy=True)
    intercept = np.array(held[0]["avg_intercept"], dtype=np.float64, copy=True)
    for r in held[1:]:
        coef += r["avg_coef"]
        intercept += r["avg_intercept"]
    return {"avg_coef": coef, "avg_intercept": intercept,
            "avg_rows": sum(r["avg_rows"] for r in held)}


def mix_sum(*results: dict) -> dict:
    """Row-weighted sums of workers' weights (one node of the mixing tree; its inputs are
    results of ``train_partitions`` or of other ``mix_sum`` nodes), in float32 with one scaling
    buffer: the node holds its inputs, the sum and the buffer, never a float64 copy."""
    done = [r for r in results if r["n_rows"] > 0]
    averaged = _sum_averages(results)
    if not done:
        return {"n_rows": 0, **averaged}
    coef = np.zeros(done[0]["coef"].shape, dtype=np.float32)
    intercept = np.zeros(done[0]["intercept"].shape, dtype=np.float64)
    scaled = np.empty_like(coef)
    for r in done:
        summed = r.get("summed", False)  # a tree node's sums are already weighted
        w = 1.0 if summed else float(r["n_rows"])
        np.multiply(r["coef"], w, out=scaled, dtype=np.float32, casting="same_kind")
        coef += scaled
        intercept += w * r["intercept"]
    return {"coef": coef, "intercept": intercept,
            # the step count the epoch started from (the same on every worker) and the most
            # steps one worker took since (mix_finish says why not all of them)
            "t0": min(r["t0"] for r in done),
            "t_steps": max(r["t_steps"] for r in done),
            "n_rows": sum(r["n_rows"] for r in done), "summed": True, **averaged}


def mix_finish(epoch: int, *results: dict) -> dict:
    """The mixed state after ``epoch`` (0-based): the row-weighted mean of ``results`` (workers'
    weights or sums of a ``mix_sum`` level below; the root of the mixing tree, so an epoch ends
    in one task). The learning-rate schedule goes on from the steps of the furthest worker, as
    if each worker were one process on its share of the rows: averaging W models divides each
    one's progress by W, so their step sizes must be those of a 1/W-size corpus. Counting every
    worker's steps instead (one process's count; tried) shrank the steps W-fold, and with 32
    models the mix fell 3-4 points of macro-F1 behind one process where this stays within one
    (``bench/workers.py --min-model-rows 1 --docs 400000 --workers 32 --corpora rare``)."""
    acc = mix_sum(*results)
    if acc["n_rows"] == 0:
        seen = [{k: r[k] for k in ("group", "n_parts") if k in r} for r in results]
        raise ValueError(f"no partition had training rows in epoch {epoch + 1} (the workers' "
                         f"groups of partitions: {seen})")
    total = float(acc["n_rows"])
    acc["coef"] /= np.float32(total)
    averaged = {}
    if acc.get("avg_rows", 0) > 0:  # the running mean of every batch's weights so far
        acc["avg_coef"] /= np.float32(acc["avg_rows"])
        averaged = {"avg_coef": acc["avg_coef"],
                    "avg_intercept": acc["avg_intercept"] / acc["avg_rows"],
                    "avg_rows": acc["avg_rows"]}
    return {"coef": acc["coef"], "intercept": acc["intercept"] / total,
            "t": acc["t0"] + acc["t_steps"], "epochs": epoch + 1, "n_rows": acc["n_rows"],
            **averaged}
