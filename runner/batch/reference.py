"""The single-process reference a cluster run is compared with: the job's shards read, cleaned,
split and hashed in this process by the same worker-side functions (so both sides see the same
features and the same split), and one scikit-learn model fitted on all training rows. Used by
the benchmarks (bench/) and by the lab test that holds the cluster to it."""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier

from runner.batch import split
from runner.batch.evaluate import metrics_from_confusion
from runner.batch.features import resolve_analyzer
from runner.batch.naive_bayes import VARIANTS
from runner.batch.parts import (
    clean_part,
    label_hashes,
    part_stats,
    read_shard,
    vectorize_part,
    with_thresholds,
)


def single_process_features(job, paths) -> dict:
    """Read, clean and hash every shard in this process; stacked train and test matrices."""
    t0 = time.perf_counter()
    cleaned = [clean_part(read_shard(str(p)), job.clean_params(), job.split_params())
               for p in paths]
    stats = [part_stats(c) for c in cleaned]
    # the stratified split and features.analyzer auto, as the cluster's run does them
    split_params = job.split_params()
    if split_params["stratify"]:
        small = split.small_labels(stats)
        split_params["thresholds"] = split.stratified_thresholds(
            [label_hashes(c, small) for c in cleaned], split_params["test_fraction"])
        cleaned = [with_thresholds(c, split_params) for c in cleaned]
    params, _, _ = resolve_analyzer(job.vectorizer_params(),
                                    sum(s["unspaced_texts"] for s in stats),
                                    sum(s["sampled_texts"] for s in stats))
    parts = [vectorize_part(c, params) for c in cleaned]
    del cleaned
    out = {
        "X_train": sp.vstack([p["X_train"] for p in parts]).tocsr(),
        "y_train": np.concatenate([p["y_train"] for p in parts]),
        "X_test": sp.vstack([p["X_test"] for p in parts]).tocsr(),
        "y_test": np.concatenate([p["y_test"] for p in parts]),
        # where each partition's training rows are in X_train (the cluster's own partitions)
        "train_part_rows": [p["X_train"].shape[0] for p in parts],
    }
    out["seconds"] = time.perf_counter() - t0
    return out


def single_process_fit(job, data: dict, kind: str) -> dict:
    """Fit one scikit-learn model on all training rows; scores on the test rows."""
    t0 = time.perf_counter()
    if kind == "naive_bayes":
        clf = VARIANTS[job.model.variant_value](alpha=job.model_params()["alpha"]
                                                 if job.model.kind == "naive_bayes" else 1.0)
    else:
        clf = SGDClassifier(max_iter=job.model.epochs, tol=None, shuffle=True, **job.sgd_params())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(data["X_train"], data["y_train"])
    fit_seconds = time.perf_counter() - t0
    classes = sorted(set(data["y_train"]) | set(data["y_test"]))
    index = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(cm, ([index[c] for c in data["y_test"]],
                   [index[c] for c in clf.predict(data["X_test"])]), 1)
    scores = metrics_from_confusion(cm, classes)
    scores["fit_seconds"] = fit_seconds
    return scores
