"""Accuracy as a corpus is cut into more partitions, next to single-process scikit-learn.

    PYTHONPATH=. .venv/bin/python bench/partitions.py [--partitions 4 16 64 256] [--only debian]

For each corpus (Debian sections from this machine's apt lists, and a synthetic corpus without
label noise, so no ceiling hides a loss) the same rows are written as 4, 16, 64 and 256 shards;
the cluster (``LocalCluster``, 2 workers x 1 thread) trains the job's sgd model on each, and one
SGDClassifier fits all training rows in this process on the same features and split (the same
epochs). Prints accuracy and macro-F1 of each, their differences in points and the time ratios,
and writes bench/results/<date>-partitions.json. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from common import single_process_features, single_process_fit

from runner.batch import load_job, prepare_dataset, run_job

HERE = Path(__file__).resolve().parent
SYNTHETIC = """\
name: synthetic-no-noise
data:
  source: synthetic
  synthetic: {n_docs: 60000, n_classes: 20, vocab_size: 20000, doc_len: 12, noise: 0.0, seed: 0}
  shard_rows: 20000
features: {n_features: 262144, ngram_range: [1, 1]}
model: {kind: sgd, epochs: 5}
"""


def with_shards(job, shard_rows: int):
    return job.model_copy(update={"data": job.data.model_copy(update={"shard_rows": shard_rows})})


def corpus_rows(job, cache: Path) -> int:
    return prepare_dataset(job, cache).rows


def measure(partitions=(4, 16, 64, 256), only: str | None = None,
            cache: Path = Path(".daskfleet/cache/datasets")) -> list[dict]:
    """One row per corpus and partition count (see the module's docstring)."""
    from distributed import Client, LocalCluster

    jobs = {}
    with tempfile.TemporaryDirectory() as tmp:
        if only in (None, "debian"):
            jobs["debian"] = load_job(HERE.parent / "jobs" / "demo.yaml")
        if only in (None, "synthetic"):
            path = Path(tmp) / "synthetic.yaml"
            path.write_text(SYNTHETIC)
            jobs["synthetic"] = load_job(path)
        rows_out = []
        with (LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
              Client(cluster) as client):
            for corpus, job in jobs.items():
                whole = prepare_dataset(job, cache)
                data = single_process_features(job, whole.paths)
                single = single_process_fit(job, data, "sgd")
                single_s = data["seconds"] + single["fit_seconds"]
                print(f"\n{corpus}: {whole.rows:,} rows; single process accuracy "
                      f"{single['accuracy']:.4f} macro-F1 {single['macro_f1']:.4f} "
                      f"({single_s:.1f}s)", file=sys.stderr)
                for n in partitions:
                    cut = with_shards(job, math.ceil(whole.rows / n))
                    ds = prepare_dataset(cut, cache)
                    t0 = time.perf_counter()
                    m = run_job(client, cut, [str(p) for p in ds.paths], Path(tmp) / f"{corpus}-{n}",
                                context={"bench": "partitions"}, progress=lambda line: None)
                    seconds = time.perf_counter() - t0
                    assert m["n_test"] == len(data["y_test"]), "both sides must use the same split"
                    rows_out.append({
                        "corpus": corpus, "partitions": len(ds.paths),
                        "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                        "single_accuracy": single["accuracy"], "single_macro_f1": single["macro_f1"],
                        "accuracy_points": 100 * (m["accuracy"] - single["accuracy"]),
                        "macro_f1_points": 100 * (m["macro_f1"] - single["macro_f1"]),
                        "seconds": seconds, "time_ratio": seconds / single_s,
                        "phases": m["timings"]})
                    r = rows_out[-1]
                    print(f"  {r['partitions']:>4} partitions: accuracy {r['accuracy']:.4f} "
                          f"({r['accuracy_points']:+.2f} pts), macro-F1 {r['macro_f1']:.4f} "
                          f"({r['macro_f1_points']:+.2f} pts), {seconds:.1f}s = "
                          f"x{r['time_ratio']:.2f} single; " + ", ".join(
                              f"{k} {v:.1f}s" for k, v in m["timings"].items()), file=sys.stderr)
    return rows_out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, nargs="+", default=[4, 16, 64, 256])
    ap.add_argument("--only", choices=["debian", "synthetic"])
    ap.add_argument("--cache", type=Path, default=Path(".daskfleet/cache/datasets"))
    args = ap.parse_args(argv)
    rows_out = measure(args.partitions, args.only, args.cache)
    print("\n| corpus | partitions | accuracy (pts vs single) | macro-F1 (pts vs single) | "
          "time / single |\n|---|---|---|---|---|")
    for r in rows_out:
        print(f"| {r['corpus']} | {r['partitions']} | {r['accuracy']:.4f} "
              f"({r['accuracy_points']:+.2f}) | {r['macro_f1']:.4f} ({r['macro_f1_points']:+.2f}) "
              f"| {r['time_ratio']:.2f} |")
    out = HERE / "results" / f"{dt.date.today().isoformat()}-partitions.json"
    out.parent.mkdir(exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(rows_out, indent=2))
    tmp_out.replace(out)
    print(f"\nwritten: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
