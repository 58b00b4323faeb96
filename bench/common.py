"""Shared pieces of the benchmarks: the single-process scikit-learn side, memory sampling.

The single-process side uses the same worker-side functions as the cluster (read, clean, hash,
split), so both sides see the same features and the same split.
"""

from __future__ import annotations

import textwrap
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier

from runner.batch import load_job, split
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
from runner.dask_workers import joined_workers


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


_SLICES: list = []  # the rows each forked fitter trains on (set before the fork, read after)


def _fit_slice(args) -> float:
    i, params, epochs = args
    X, y = _SLICES[i]
    clf = SGDClassifier(max_iter=epochs, tol=None, shuffle=True, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(X, y)
    return time.perf_counter() - t0


def concurrent_single_fits(job, data: dict, n: int) -> dict:
    """The machine's own ceiling for training on ``n`` cores: ``n`` independent processes fit
    scikit-learn at the same time, each on a contiguous ``1/n`` of the training rows (about what
    each of ``n`` workers holds), no coordination at all. Returns the training rows per second
    they reach together (rows over the slowest one's fit time) and each one's seconds. On a
    machine whose cores are shared or starved of memory bandwidth this is well below ``n`` times
    one process, and no cluster can beat it."""
    import multiprocessing

    X, y = data["X_train"], data["y_train"]
    bounds = np.linspace(0, X.shape[0], n + 1).astype(int)
    _SLICES[:] = [(X[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    try:
        with multiprocessing.get_context("fork").Pool(n) as pool:
            pool.map(_fit_slice, [(0, job.sgd_params(), 1)] * n)  # warm: imports, page faults
            seconds = pool.map(_fit_slice, [(i, job.sgd_params(), job.model.epochs)
                                            for i in range(n)])
    finally:
        _SLICES.clear()
    return {"rows_per_s": X.shape[0] / max(seconds), "seconds": seconds}


@contextmanager
def peak_worker_memory(client, interval: float = 0.2):
    """Sample the workers' ``memory`` metric (process RSS) while the block runs; yields a dict
    whose ``peak`` (bytes, the largest single worker) is filled in at the end."""
    result = {"peak": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                workers = joined_workers(client).values()
                result["peak"] = max([result["peak"],
                                      *(w["metrics"]["memory"] for w in workers)])
            except (OSError, KeyError, RuntimeError):
                pass
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()


def synthetic_job(path: Path, name: str, n_docs: int, partition_mb: float, *, kind: str = "sgd",
                  epochs: int = 5, cache: bool = True):
    """A job file on the synthetic corpus the benchmarks share (10 classes, Zipf words)."""
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        data:
          source: synthetic
          synthetic: {{n_docs: {n_docs}, n_classes: 10, vocab_size: 20000, doc_len: 40,
                       noise: 0.05, seed: 0}}
          partition_mb: {partition_mb}
        features: {{n_features: 262144, ngram_range: [1, 1], cache: {str(cache).lower()}}}
        model: {{kind: {kind}, epochs: {epochs}}}
        """))
    return load_job(path)
