"""Accuracy of the cluster's parameter-mixing SGD next to single-process scikit-learn.

    .venv/bin/python bench/accuracy.py jobs/demo.yaml [--cache DIR]

Both sides use the same shards, the same cleaning, hashing and split (the worker-side functions
of runner.batch); the single-process side fits one SGDClassifier on all training rows
(``max_iter`` = the job's epochs), the cluster side runs ``run_job`` on a
``LocalCluster(n_workers=2, threads_per_worker=1)``. Prints accuracy and macro-F1 side by side
and the ratio of the wall times measured in this run (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier

from runner.batch import load_job, prepare_dataset, run_job
from runner.batch.evaluate import metrics_from_confusion
from runner.batch.parts import clean_part, read_shard, vectorize_part


def single_process(job, paths: list[Path]) -> dict:
    t0 = time.perf_counter()
    parts = [
        vectorize_part(clean_part(read_shard(str(p)), job.clean_params(), job.split_params()),
                       job.vectorizer_params())
        for p in paths
    ]
    X_train = sp.vstack([p["X_train"] for p in parts]).tocsr()
    y_train = np.concatenate([p["y_train"] for p in parts])
    X_test = sp.vstack([p["X_test"] for p in parts]).tocsr()
    y_test = np.concatenate([p["y_test"] for p in parts])
    t_features = time.perf_counter() - t0
    clf = SGDClassifier(max_iter=job.model.epochs, tol=None, shuffle=True, **job.sgd_params())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train, y_train)
    t_fit = time.perf_counter() - t0 - t_features
    classes = sorted(set(y_train) | set(y_test))
    index = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(cm, ([index[c] for c in y_test], [index[c] for c in clf.predict(X_test)]), 1)
    scores = metrics_from_confusion(cm, classes)
    scores["seconds"] = time.perf_counter() - t0
    scores["timings"] = {"features": t_features, "fit": t_fit}
    scores["n_train"], scores["n_test"] = len(y_train), len(y_test)
    return scores


def main(argv: list[str] | None = None) -> int:
    from distributed import Client, LocalCluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job", type=Path)
    ap.add_argument("--cache", type=Path, default=Path(".daskfleet/cache/datasets"))
    args = ap.parse_args(argv)

    job = load_job(args.job)
    t0 = time.perf_counter()
    dataset = prepare_dataset(job, args.cache)
    print(f"dataset: {dataset.rows:,} rows in {len(dataset.files)} shards at {dataset.dir} "
          f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)

    single = single_process(job, dataset.paths)

    with (LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
          Client(cluster) as client, tempfile.TemporaryDirectory() as tmp):
        t0 = time.perf_counter()
        cluster_metrics = run_job(client, job, [str(p) for p in dataset.paths],
                                  Path(tmp) / "run", context={"bench": "accuracy"})
        cluster_seconds = time.perf_counter() - t0

    assert single["n_test"] == cluster_metrics["n_test"], "both sides must use the same split"
    print(f"\njob {job.name}: {cluster_metrics['n_train']:,} train / "
          f"{cluster_metrics['n_test']:,} test rows, {cluster_metrics['n_classes']} classes, "
          f"majority class {cluster_metrics['majority_rate']:.3f}")
    print(f"{'':28}{'accuracy':>10}{'macro-F1':>10}{'seconds':>10}")
    print(f"{'single-process sklearn':28}{single['accuracy']:>10.4f}{single['macro_f1']:>10.4f}"
          f"{single['seconds']:>10.2f}")
    print(f"{'LocalCluster 2x1 (mixing)':28}{cluster_metrics['accuracy']:>10.4f}"
          f"{cluster_metrics['macro_f1']:>10.4f}{cluster_seconds:>10.2f}")
    print(f"cluster / single: accuracy x{cluster_metrics['accuracy'] / single['accuracy']:.3f}, "
          f"macro-F1 x{cluster_metrics['macro_f1'] / single['macro_f1']:.3f}, "
          f"time x{cluster_seconds / single['seconds']:.2f}")
    print("cluster phases: " + ", ".join(
        f"{k} {v:.2f}s" for k, v in cluster_metrics["timings"].items()))
    print("single phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in single["timings"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
