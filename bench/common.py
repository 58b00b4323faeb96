"""Shared pieces of the benchmarks: the single-process scikit-learn side
(``runner.batch.reference``), the machine's ceiling, memory sampling."""

from __future__ import annotations

import textwrap
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier

from runner.batch import load_job
from runner.batch.reference import single_process_features, single_process_fit
from runner.dask_workers import joined_workers

# the single-process side, re-exported for the benchmarks that import it from here
__all__ = ["single_process_features", "single_process_fit"]


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
