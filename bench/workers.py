"""Accuracy as the workers grow, next to single-process scikit-learn, over several seeds.

    PYTHONPATH=. .venv/bin/python bench/workers.py [--workers 2 4 8 16 32] [--seeds 0 1 2]
        [--corpora debian synthetic rare] [--docs 60000] [--average]

Parameter mixing mixes one model per worker, so it is the worker count that could move accuracy
away from one process. For each worker count W a ``LocalCluster(n_workers=W,
threads_per_worker=1)`` trains the sgd model of each corpus, once per seed (``model.seed`` and
``split.seed`` both), and one SGDClassifier fits the same training rows in this process on the
same features and split (the same epochs). Corpora: Debian sections (this machine's apt lists),
a synthetic corpus without label noise (no ceiling hides a loss), and the same with four rare
classes of about 0.3 % of rows each, cut into 64 partitions. Reports, per corpus and W, how
many models were mixed (one per worker, but at least 10,000 training rows a model:
``train.MIN_MODEL_ROWS``) and the mean, lowest and highest difference in points of accuracy and
of macro-F1 over the seeds. A benchmark: nothing asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import single_process_features, single_process_fit

from runner.batch import load_job, prepare_dataset, run_job
from runner.batch.synthetic import class_names, generate

HERE = Path(__file__).resolve().parent
SYNTHETIC = """\
name: synthetic-no-noise
data:
  source: synthetic
  synthetic: {{n_docs: {docs}, n_classes: 20, vocab_size: 20000, doc_len: 12, noise: 0.0, seed: 0}}
  shard_rows: {shard_rows}
features: {{n_features: 262144, ngram_range: [1, 1]}}
model: {{kind: sgd, epochs: 5}}
"""
RARE = """\
name: synthetic-rare
data: {{source: files, path: rare.csv, shard_rows: {shard_rows}}}
features: {{n_features: 262144, ngram_range: [1, 1]}}
model: {{kind: sgd, epochs: 5}}
"""
RARE_CLASSES, RARE_SHARE = 4, 0.003
PARTITIONS = 64  # enough for 32 workers to hold two each


def rare_corpus(folder: Path, docs: int) -> Path:
    """The synthetic corpus with its last ``RARE_CLASSES`` classes cut to about ``RARE_SHARE`` of
    the rows each (the first rows of each, so the cut is the same on every run)."""
    rare = set(class_names(20)[-RARE_CLASSES:])
    keep = max(2, int(RARE_SHARE * docs))
    seen: dict[str, int] = {}
    rows = []
    for text, label in generate(docs, 20, 20000, 12, 0.0, 0):
        if label in rare:
            seen[label] = seen.get(label, 0) + 1
            if seen[label] > keep:
                continue
        rows.append((text, label))
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(folder / "rare.csv", index=False)
    (folder / "rare.yaml").write_text(RARE.format(shard_rows=docs // PARTITIONS))
    return folder / "rare.yaml"


def seeded(job, seed: int, average: bool = False):
    return job.model_copy(update={
        "model": job.model.model_copy(update={"seed": seed, "average": average}),
        "split": job.split.model_copy(update={"seed": seed})})


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def measure(worker_counts=(2, 4, 8, 16, 32), seeds=(0, 1, 2),
            corpora=("debian", "synthetic", "rare"), docs: int = 60_000,
            cache: Path = Path(".daskfleet/cache/datasets"), log=print,
            average: bool = False) -> list[dict]:
    """One row per corpus and worker count (see the module's docstring)."""
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jobs = {}
        if "debian" in corpora:
            jobs["debian"] = load_job(HERE.parent / "jobs" / "demo.yaml")
        if "synthetic" in corpora:
            (folder / "synthetic.yaml").write_text(SYNTHETIC.format(
                docs=docs, shard_rows=docs // PARTITIONS))
            jobs["synthetic"] = load_job(folder / "synthetic.yaml")
        if "rare" in corpora:
            jobs["rare"] = load_job(rare_corpus(folder, docs))
        single: dict = {}
        paths: dict = {}
        for name, job in jobs.items():
            paths[name] = [str(p) for p in prepare_dataset(job, cache).paths]
            for seed in seeds:
                data = single_process_features(seeded(job, seed, average), paths[name])
                single[name, seed] = single_process_fit(seeded(job, seed, average), data, "sgd")
        runs: dict = {}
        for n in worker_counts:
            t0 = time.perf_counter()
            with (LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=None) as cl,
                  Client(cl) as client):
                client.wait_for_workers(n)
                for name, job in jobs.items():
                    for seed in seeds:
                        runs[name, n, seed] = run_job(
                            client, seeded(job, seed, average), paths[name],
                            folder / "runs" / f"{name}-{n}-{seed}", context={"bench": "workers"},
                            progress=lambda line: None)
            log(f"workers: {n} done ({time.perf_counter() - t0:.0f}s)")
    rows = []
    for name in jobs:
        for n in worker_counts:
            acc = [100 * (runs[name, n, s]["accuracy"] - single[name, s]["accuracy"])
                   for s in seeds]
            f1 = [100 * (runs[name, n, s]["macro_f1"] - single[name, s]["macro_f1"])
                  for s in seeds]
            rows.append({"corpus": name, "workers": n, "seeds": list(seeds),
                         "mixed_models": runs[name, n, seeds[0]]["mixed_models"],
                         "n_train": runs[name, n, seeds[0]]["n_train"],
                         "single_accuracy": statistics.fmean(single[name, s]["accuracy"]
                                                             for s in seeds),
                         "accuracy_points": spread(acc), "macro_f1_points": spread(f1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", nargs="+", type=int, default=[2, 4, 8, 16, 32])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--corpora", nargs="+", default=["debian", "synthetic", "rare"])
    ap.add_argument("--docs", type=int, default=60_000)
    ap.add_argument("--min-model-rows", type=int, default=None,
                    help="train.MIN_MODEL_ROWS for this run (1: one model per worker, always)")
    ap.add_argument("--average", action="store_true",
                    help="model.average: true on both sides (scikit-learn's own ASGD in the "
                         "single process)")
    args = ap.parse_args(argv)
    if args.min_model_rows is not None:  # read by the client side, in this process
        from runner.batch import train

        train.MIN_MODEL_ROWS = args.min_model_rows
    rows = measure(args.workers, args.seeds, args.corpora, args.docs,
                   log=lambda line: print(line, file=sys.stderr, flush=True),
                   average=args.average)
    for r in rows:
        a, f = r["accuracy_points"], r["macro_f1_points"]
        print(f"{r['corpus']:>10} {r['workers']:>3} workers ({r['mixed_models']} models mixed): "
              f"accuracy {a['mean']:+.2f} pts "
              f"[{a['min']:+.2f}, {a['max']:+.2f}], macro-F1 {f['mean']:+.2f} pts "
              f"[{f['min']:+.2f}, {f['max']:+.2f}] (one process {r['single_accuracy']:.4f})")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
