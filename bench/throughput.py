"""Throughput on synthetic corpora of three sizes growing 4x: cluster next to single process.

    PYTHONPATH=. .venv/bin/python bench/throughput.py [--scale 1.0] [--workers 2]

Sizes are 25k, 100k and 400k documents times ``--scale`` (the default finishes in a few minutes
on 2 cores). For each size it prints documents per second for load+clean+vectorize and for
training (5 epochs of SGD), on a ``LocalCluster(n_workers, threads_per_worker=1)`` and in one
process with scikit-learn on the same features, and the peak memory of the largest worker
(its ``memory`` metric, sampled every 0.2 s during the run). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from pathlib import Path

from common import peak_worker_memory, single_process_features, single_process_fit

from runner.batch import load_job, prepare_dataset, run_job

BASE_SIZES = (25_000, 100_000, 400_000)


def synthetic_job(folder: Path, n_docs: int, partition_mb: float):
    path = folder / f"synthetic-{n_docs}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: throughput-{n_docs}
        data:
          source: synthetic
          synthetic: {{n_docs: {n_docs}, n_classes: 10, vocab_size: 20000, doc_len: 40,
                       noise: 0.05, seed: 0}}
          partition_mb: {partition_mb}
        features: {{n_features: 262144, ngram_range: [1, 1]}}
        model: {{kind: sgd, epochs: 5}}
        """))
    return load_job(path)


def main(argv: list[str] | None = None) -> int:
    from distributed import Client, LocalCluster

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the corpus sizes")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partition-mb", type=float, default=4.0)
    ap.add_argument("--cache", type=Path, default=Path(".daskfleet/cache/datasets"))
    args = ap.parse_args(argv)
    sizes = [max(1000, int(n * args.scale)) for n in BASE_SIZES]

    rows = []
    with (LocalCluster(n_workers=args.workers, threads_per_worker=1,
                       dashboard_address=None) as cluster,
          Client(cluster) as client, tempfile.TemporaryDirectory() as tmp):
        for n in sizes:
            job = synthetic_job(Path(tmp), n, args.partition_mb)
            t0 = time.perf_counter()
            dataset = prepare_dataset(job, args.cache)
            prepare_s = time.perf_counter() - t0
            paths = [str(p) for p in dataset.paths]
            with peak_worker_memory(client) as memory:
                m = run_job(client, job, paths, Path(tmp) / f"run-{n}", progress=lambda line: None)
            t = m["timings"]
            features_s = t["load"] + t["clean"] + t["vectorize"]
            data = single_process_features(job, dataset.paths)
            single = single_process_fit(job, data, "sgd")
            rows.append({
                "docs": n, "partitions": len(paths), "prepare_s": prepare_s,
                "cluster_features_dps": n / features_s, "single_features_dps": n / data["seconds"],
                "cluster_train_dps": m["n_train"] / t["train"],
                "single_train_dps": m["n_train"] / single["fit_seconds"],
                "cluster_acc": m["accuracy"], "single_acc": single["accuracy"],
                "peak_mb": memory["peak"] / 2**20,
            })
            del data
            print(f"{n:,} docs done", flush=True)

    print(f"\nLocalCluster {args.workers}x1 vs single process (docs/s; ratio = cluster / single)")
    print(f"{'docs':>9} {'parts':>5} | {'features: cluster':>17} {'single':>8} {'ratio':>6} | "
          f"{'train: cluster':>14} {'single':>8} {'ratio':>6} | {'acc cl/single':>13} | "
          f"{'peak worker MB':>14}")
    for r in rows:
        print(f"{r['docs']:>9,} {r['partitions']:>5} | {r['cluster_features_dps']:>17,.0f} "
              f"{r['single_features_dps']:>8,.0f} "
              f"{r['cluster_features_dps'] / r['single_features_dps']:>6.2f} | "
              f"{r['cluster_train_dps']:>14,.0f} {r['single_train_dps']:>8,.0f} "
              f"{r['cluster_train_dps'] / r['single_train_dps']:>6.2f} | "
              f"{r['cluster_acc']:.3f}/{r['single_acc']:.3f} | {r['peak_mb']:>14,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
