"""Throughput on synthetic corpora of three sizes growing 4x: cluster next to single process.

    PYTHONPATH=. .venv/bin/python bench/throughput.py [--scale 1.0] [--workers 2] \
        [--cache both|true|false] [--datasets DIR]

Sizes are 25k, 100k and 400k documents times ``--scale`` (the default finishes in a few minutes
on 2 cores). For each size and each ``features.cache`` mode (``--cache``: both, the default, or
one of them) it prints documents per second for load+clean+vectorize, for training (5 epochs of
SGD) and for the whole run, on a fresh ``LocalCluster(n_workers, threads_per_worker=1)`` per run
(its workers import the training code first), next to one process with scikit-learn on the same
features, and the peak memory of the largest worker (its ``memory`` metric, process RSS, sampled
every 0.2 s during the run). At the end, per mode, the ratio of the peak worker memory of the
largest size to the smallest's (the corpus grows 16x). Without the cache the
load+clean+vectorize column covers only the counting pass (the features are rebuilt inside every
training and evaluation task), so compare the whole-run column. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import common
from common import (
    concurrent_single_fits,
    peak_worker_memory,
    single_process_features,
    single_process_fit,
)

from runner.batch import prepare_dataset, run_job

BASE_SIZES = (25_000, 100_000, 400_000)
MODES = {"both": (True, False), "true": (True,), "false": (False,)}


def synthetic_job(folder: Path, n_docs: int, partition_mb: float, cache: bool = True):
    return common.synthetic_job(folder / f"synthetic-{n_docs}-{cache}.yaml", f"throughput-{n_docs}",
                                n_docs, partition_mb, cache=cache)


def measure(sizes, workers: int = 2, partition_mb: float = 4.0, modes=(True, False),
            datasets: Path = Path(".daskfleet/cache/datasets"), log=print) -> list[dict]:
    """One row per corpus size: per ``features.cache`` mode, the cluster's documents per second
    (features, training, whole run), accuracy and peak worker memory; one process's figures on
    the same features; ``train_per_core``, the cluster's training rate per worker over one
    process's (the cluster's training time covers mixing and its scheduling);
    ``ceiling_per_core``, the same ratio for ``workers`` independent processes running the
    workers' training batches at once
    (``common.concurrent_single_fits``), and ``train_vs_ceiling``, the cluster's rate over
    theirs."""
    from distributed import Client, LocalCluster

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            dataset = prepare_dataset(synthetic_job(Path(tmp), n, partition_mb), datasets)
            prepare_s = time.perf_counter() - t0
            paths = [str(p) for p in dataset.paths]
            row = {"docs": n, "partitions": len(paths), "prepare_s": prepare_s}
            for cache in modes:
                job = synthetic_job(Path(tmp), n, partition_mb, cache)
                # a fresh cluster per run: a worker's RSS does not shrink after a bigger run
                with (LocalCluster(n_workers=workers, threads_per_worker=1,
                                   dashboard_address=None) as cluster,
                      Client(cluster) as client):
                    # the training code imported first, as the single process has it and as a
                    # running cluster's workers have it after their first job: a fresh worker
                    # otherwise imports scikit-learn's linear models inside the first epoch
                    # (about 0.5 s, more without bytecode), which this ratio is not about
                    client.run(lambda: bool(__import__("runner.batch.train")))
                    with peak_worker_memory(client) as memory:
                        m = run_job(client, job, paths, Path(tmp) / f"run-{n}-{cache}",
                                    progress=lambda line: None)
                t = m["timings"]
                row[cache] = {
                    "features_dps": n / max(t["load"] + t["clean"] + t["vectorize"], 1e-9),
                    "train_dps": m["n_train"] / t["train"],
                    "total_dps": n / m["duration_s"],
                    "acc": m["accuracy"], "peak_mb": memory["peak"] / 2**20,
                }
                log(f"{n:,} docs, cache {str(cache).lower()}: done")
            data = single_process_features(job, dataset.paths)
            single = single_process_fit(job, data, "sgd")
            ceiling = concurrent_single_fits(job, data, workers)
            row.update(single_features_dps=n / data["seconds"],
                       single_train_dps=m["n_train"] / single["fit_seconds"],
                       single_acc=single["accuracy"],
                       concurrent_train_dps=ceiling["rows_per_s"])
            del data
            rows.append(row)

    for row in rows:
        for cache in modes:
            row[cache]["train_per_core"] = row[cache]["train_dps"] / (workers * row["single_train_dps"])
            # what the machine itself allows: independent processes doing the same work at once
            row[cache]["train_vs_ceiling"] = row[cache]["train_dps"] / row["concurrent_train_dps"]
        row["ceiling_per_core"] = row["concurrent_train_dps"] / (workers * row["single_train_dps"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the corpus sizes")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partition-mb", type=float, default=4.0)
    ap.add_argument("--cache", choices=sorted(MODES), default="both",
                    help="features.cache of the runs: true, false or both (default)")
    ap.add_argument("--datasets", type=Path, default=Path(".daskfleet/cache/datasets"),
                    help="where the synthetic corpora are written (reused across runs)")
    args = ap.parse_args(argv)
    sizes = [max(1000, int(n * args.scale)) for n in BASE_SIZES]
    modes = MODES[args.cache]
    rows = measure(sizes, args.workers, args.partition_mb, modes, args.datasets)

    print(f"\nLocalCluster {args.workers}x1 (a fresh one per run) vs single process, docs/s")
    print(f"{'docs':>9} {'parts':>5} {'cache':>5} | {'features':>9} {'train':>8} {'run':>8} | "
          f"{'single: features':>16} {'train':>8} | {'acc cl/single':>13} | {'peak worker MB':>14}")
    for r in rows:
        for cache in modes:
            c = r[cache]
            print(f"{r['docs']:>9,} {r['partitions']:>5} {str(cache).lower():>5} | "
                  f"{c['features_dps']:>9,.0f} {c['train_dps']:>8,.0f} {c['total_dps']:>8,.0f} | "
                  f"{r['single_features_dps']:>16,.0f} {r['single_train_dps']:>8,.0f} | "
                  f"{c['acc']:.3f}/{r['single_acc']:.3f} | {c['peak_mb']:>14,.0f}")
    for r in rows:
        print(f"{r['docs']:>9,}: {args.workers} independent processes training at once reach "
              f"{r['concurrent_train_dps']:,.0f} docs/s, {r['ceiling_per_core']:.2f} per core of one "
              f"alone (this machine's ceiling)")
    first, last = rows[0], rows[-1]
    for cache in modes:
        print(f"cache {str(cache).lower():>5}: peak worker memory {last[cache]['peak_mb']:,.0f} MB "
              f"at {last['docs']:,} docs / {first[cache]['peak_mb']:,.0f} MB at "
              f"{first['docs']:,} docs = {last[cache]['peak_mb'] / first[cache]['peak_mb']:.2f}x "
              f"(corpus {last['docs'] / first['docs']:.0f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
