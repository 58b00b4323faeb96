"""Shared pieces of the benchmarks: the single-process scikit-learn side
(``runner.batch.reference``), the machine's ceiling, memory sampling."""

from __future__ import annotations

import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from runner.batch import load_job
from runner.batch.reference import single_process_features, single_process_fit
from runner.dask_workers import joined_workers

# the single-process side, re-exported for the benchmarks that import it from here
__all__ = ["single_process_features", "single_process_fit"]


_GROUPS: list = []  # the partitions each forked process trains on (set before the fork)


def _train_group(args) -> float:
    """The workers' own epochs (``train.train_partitions``: the same batches of at least
    ``parts.BATCH_ROWS`` rows, the same partial_fit calls) over one group of partitions, each
    epoch going on from this process's own state: a worker's work with nothing to mix."""
    from runner.batch import train

    i, classes, params, epochs = args
    state = None
    t0 = time.perf_counter()
    for epoch in range(epochs):
        state = train.mix_finish(epoch, train.train_partitions(_GROUPS[i], state, classes,
                                                               params, epoch, i))
    return time.perf_counter() - t0


def concurrent_single_fits(job, data: dict, n: int) -> dict:
    """The machine's own ceiling for training on ``n`` cores: ``n`` independent processes run
    the cluster's training work at the same time, no coordination at all. The partitions are
    the run's (``data["train_part_rows"]``), grouped as the cluster groups them (partition i to
    group i mod n), and each process runs the workers' epochs over its group: the same batches
    and calls as the cluster, so the cluster can at best match it (the cluster adds mixing and
    scheduling). Returns the training rows per second they reach together (rows over the
    slowest one's time) and each one's seconds."""
    import multiprocessing

    X, y = data["X_train"], data["y_train"]
    ends = np.cumsum(data["train_part_rows"])
    parts = [{"X_train": X[a:b], "y_train": y[a:b]}
             for a, b in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True)]
    _GROUPS[:] = [parts[j::n] for j in range(n)]
    classes = sorted(set(y))
    params = job.sgd_params()
    try:
        with multiprocessing.get_context("fork").Pool(n) as pool:
            pool.map(_train_group, [(i, classes, params, 1) for i in range(n)])  # warm
            seconds = pool.map(_train_group, [(i, classes, params, job.model.epochs)
                                              for i in range(n)])
    finally:
        _GROUPS.clear()
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
