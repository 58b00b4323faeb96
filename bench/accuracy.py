"""Accuracy of the cluster's models next to single-process scikit-learn on the same features.

    PYTHONPATH=. .venv/bin/python bench/accuracy.py jobs/demo.yaml [--cache DIR]
        [--workers 2,8,16] [--kinds sgd]

Both sides use the same shards, the same cleaning, hashing and split (the worker-side functions
of runner.batch). For ``sgd`` the single-process side fits one SGDClassifier on all training
rows (``max_iter`` = the job's epochs) while the cluster runs parameter mixing; for
``naive_bayes`` it fits one MultinomialNB while the cluster sums per-partition counts (the two
should agree to rounding). The cluster is a ``LocalCluster(n_workers=W, threads_per_worker=1)``
for each W of ``--workers`` (2 by default): parameter mixing mixes one model per worker, so it
is the worker count, not the partition count, that could move accuracy away from one process.
Prints accuracy, macro-F1 and the wall-time ratios measured in this run (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import single_process_features, single_process_fit

from runner.batch import load_job, prepare_dataset, run_job

KINDS = ("sgd", "naive_bayes")


def with_kind(job, kind: str):
    """The job with ``model.kind`` replaced (alpha back to that kind's default)."""
    model = job.model.model_copy(update={"kind": kind, "alpha": None, "variant": None})
    return job.model_copy(update={"model": model})


def main(argv: list[str] | None = None) -> int:
    from distributed import Client, LocalCluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job", type=Path)
    ap.add_argument("--cache", type=Path, default=Path(".daskfleet/cache/datasets"))
    ap.add_argument("--workers", default="2", help="worker counts, comma-separated")
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args(argv)
    kinds = tuple(args.kinds.split(","))
    counts = [int(w) for w in args.workers.split(",")]

    job = load_job(args.job)
    t0 = time.perf_counter()
    dataset = prepare_dataset(job, args.cache)
    print(f"dataset: {dataset.rows:,} rows in {len(dataset.files)} shards at {dataset.dir} "
          f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)

    data = single_process_features(job, dataset.paths)
    single = {kind: single_process_fit(with_kind(job, kind), data, kind) for kind in kinds}

    cluster_runs = {}
    for n in counts:
        with (LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=None) as cluster,
              Client(cluster) as client, tempfile.TemporaryDirectory() as tmp):
            for kind in kinds:
                t0 = time.perf_counter()
                metrics = run_job(client, with_kind(job, kind), [str(p) for p in dataset.paths],
                                  Path(tmp) / kind, context={"bench": "accuracy"},
                                  progress=lambda line: None)
                cluster_runs[kind, n] = (metrics, time.perf_counter() - t0)

    any_metrics = next(iter(cluster_runs.values()))[0]
    assert len(data["y_test"]) == any_metrics["n_test"], "both sides must use the same split"
    print(f"\njob {job.name}: {any_metrics['n_train']:,} train / {any_metrics['n_test']:,} test "
          f"rows, {any_metrics['n_classes']} classes, majority class "
          f"{any_metrics['majority_rate']:.3f}; features {data['seconds']:.1f}s single-process")
    print(f"{'':34}{'accuracy':>10}{'macro-F1':>10}{'seconds':>10}")
    for kind in kinds:
        s = single[kind]
        print(f"{'sklearn single-process ' + kind:34}{s['accuracy']:>10.4f}{s['macro_f1']:>10.4f}"
              f"{data['seconds'] + s['fit_seconds']:>10.2f}")
        for n in counts:
            m, seconds = cluster_runs[kind, n]
            print(f"{f'LocalCluster {n}x1 ' + kind:34}{m['accuracy']:>10.4f}"
                  f"{m['macro_f1']:>10.4f}{seconds:>10.2f}")
            print(f"  cluster / single ({kind}, {n} workers): accuracy "
                  f"x{m['accuracy'] / s['accuracy']:.3f}, macro-F1 x{m['macro_f1'] / s['macro_f1']:.3f}, "
                  f"time x{seconds / (data['seconds'] + s['fit_seconds']):.2f}; cluster phases "
                  + ", ".join(f"{k} {v:.2f}s" for k, v in m["timings"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
