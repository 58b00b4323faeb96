"""Parallel SGD (parameter mixing) next to the sequential baseline (dask-ml Incremental).

    PYTHONPATH=. .venv/bin/python bench/training.py [--docs 100000] [--epochs 5]

Both run on the same ``LocalCluster(n_workers=2, threads_per_worker=1)``, over the same
synthetic corpus, features and split; prints training time, accuracy and macro-F1 and their
ratios measured in this run. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import synthetic_job

from runner.batch import prepare_dataset, run_job


def job_for(folder: Path, kind: str, docs: int, epochs: int):
    return synthetic_job(folder / f"{kind}.yaml", f"training-{kind}", docs, 2, kind=kind,
                         epochs=epochs)


def main(argv: list[str] | None = None) -> int:
    from distributed import Client, LocalCluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=Path(".daskfleet/cache/datasets"))
    args = ap.parse_args(argv)

    results = {}
    with (LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
          Client(cluster) as client, tempfile.TemporaryDirectory() as tmp):
        for kind in ("sgd", "incremental"):
            job = job_for(Path(tmp), kind, args.docs, args.epochs)
            dataset = prepare_dataset(job, args.cache)
            t0 = time.perf_counter()
            m = run_job(client, job, [str(p) for p in dataset.paths], Path(tmp) / kind,
                        progress=lambda line: None)
            results[kind] = (m, time.perf_counter() - t0, len(dataset.files))

    print(f"\n{args.docs:,} synthetic docs, {results['sgd'][2]} partitions, {args.epochs} epochs, "
          "LocalCluster 2x1")
    print(f"{'':34}{'train s':>9}{'total s':>9}{'accuracy':>10}{'macro-F1':>10}")
    for kind, label in (("sgd", "parallel sgd (parameter mixing)"),
                        ("incremental", "dask-ml Incremental (sequential)")):
        m, total, _ = results[kind]
        print(f"{label:34}{m['timings']['train']:>9.2f}{total:>9.2f}{m['accuracy']:>10.4f}"
              f"{m['macro_f1']:>10.4f}")
    sgd, inc = results["sgd"][0], results["incremental"][0]
    print(f"sgd / incremental: train time x{sgd['timings']['train'] / inc['timings']['train']:.2f}, "
          f"accuracy x{sgd['accuracy'] / inc['accuracy']:.3f}, "
          f"macro-F1 x{sgd['macro_f1'] / inc['macro_f1']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
