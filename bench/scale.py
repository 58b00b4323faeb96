"""End to end on the lab cluster as the corpus grows: time, peak worker memory above idle, the
client's peak memory, and predict throughput against one process, as ratios within one run.

    .venv/bin/python bench/scale.py [--sizes 100000 400000 1600000] [--epochs 3]

Needs the cluster of clusters/lab.yaml up (bench/suite.py brings it up). For each size, a
synthetic corpus with a seed of this run (so no cache, here or on the workers, serves it) and
``features.cache: false`` (every task rebuilds its rows' features from the shards, so a worker
holds one batch at a time, never the corpus):
- the workers are restarted, then their idle memory (the ``memory`` metric, process RSS) is
  sampled for 3 s; `daskfleet submit` runs as a child process: its wall time is the end-to-end
  time (corpus generation, shipping, training, evaluation, report) and its peak RSS (its own,
  through a small launcher: ``LAUNCHER``) the client's memory; the workers' memory is sampled
  every 0.2 s while it runs;
- `daskfleet predict` with the run's model on the run's corpus (one parquet file), wall time and
  peak RSS, next to the same predictions made in this process (`predict_shard` over the same
  input shards, one after the other), at the smallest and the largest size.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parents[1]
LAB_CLUSTER = ROOT / "clusters" / "lab.yaml"
SIZES = (100_000, 400_000, 1_600_000)


def job_text(n_docs: int, seed: int, epochs: int) -> str:
    return textwrap.dedent(f"""\
        name: scale-{n_docs}
        data:
          source: synthetic
          synthetic: {{n_docs: {n_docs}, n_classes: 10, vocab_size: 20000, doc_len: 40,
                       noise: 0.05, seed: {seed}}}
          partition_mb: 4
        features: {{n_features: 262144, ngram_range: [1, 1], cache: false}}
        model: {{kind: sgd, epochs: {epochs}}}
        """)


# Runs the command and prints its peak RSS in KiB (its children's ru_maxrss). A launcher,
# because Linux starts an exec'd child's ru_maxrss at the high-water mark of the process it was
# forked from (subprocess forks with vfork): measured from here, `/bin/true` reports this
# benchmark's own peak (hundreds of MB), not its own; from the launcher, about 13 MB.
LAUNCHER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN)"
            ".ru_maxrss)); sys.exit(rc)")


def run_child(argv: list[str], env: dict, log: Path) -> tuple[int, float, int]:
    """Run a daskfleet command; its exit code, wall seconds and peak RSS in bytes."""
    rss = log.with_suffix(".maxrss")
    t = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.call([sys.executable, "-c", LAUNCHER, str(rss), sys.executable, "-m",
                              "runner.cli", *argv], cwd=ROOT, env=env, stdout=out,
                             stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t
    # no figure if the launcher itself was killed: the caller reports the exit code and the log
    return rc, seconds, int(rss.read_text()) * 1024 if rss.exists() else 0


def idle_memory(client, seconds: float = 3.0) -> int:
    """The largest worker's memory after a restart, settled."""
    client.restart(wait_for_workers=True)
    with common.peak_worker_memory(client) as memory:
        time.sleep(seconds)
    return memory["peak"]


def corpus_file(cache: Path, out: Path) -> int:
    """The run's shards (text, label) as one parquet file: the input of `predict`."""
    import pyarrow.parquet as pq

    shards = sorted(p for p in cache.rglob("*.parquet"))
    rows, writer = 0, None
    try:
        for shard in shards:
            table = pq.read_table(shard, columns=["text", "label"])
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


def predict_single_process(model_path: Path, data: Path, cache: Path) -> float:
    """Seconds for the same predictions in this process: shard the input, predict each shard."""
    from runner.batch.model import load_model, predict_shard
    from runner.batch.predict_input import prepare_prediction_input

    t = time.perf_counter()
    model = load_model(model_path)
    dataset = prepare_prediction_input(data, cache)
    for path in dataset.paths:
        predict_shard(str(path), model)
    return time.perf_counter() - t


def measure(sizes=SIZES, epochs: int = 3, log=print) -> dict:
    from runner import Cluster

    seed = secrets.randbelow(2**31)
    out: dict = {"sizes": [], "predict": [], "seed": seed, "epochs": epochs}
    with tempfile.TemporaryDirectory() as tmp, Cluster.from_file(LAB_CLUSTER) as cluster:
        tmp = Path(tmp)
        client = cluster.client()
        for i, n in enumerate(sizes):
            cache = tmp / f"cache-{n}"
            env = {**os.environ, "DASKFLEET_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
            job = tmp / f"scale-{n}.yaml"
            job.write_text(job_text(n, seed, epochs))
            idle = idle_memory(client)
            with common.peak_worker_memory(client) as memory:
                rc, seconds, client_rss = run_child(
                    ["submit", str(job), "-c", str(LAB_CLUSTER), "--runs-dir", str(tmp / "runs")],
                    env, tmp / f"submit-{n}.log")
            if rc != 0:
                raise SystemExit(f"submit of {n:,} documents failed (rc {rc}):\n"
                                 + (tmp / f"submit-{n}.log").read_text()[-3000:])
            row = {"docs": n, "seconds": seconds, "docs_per_s": n / seconds,
                   "worker_idle_mb": idle / 2**20, "worker_peak_mb": memory["peak"] / 2**20,
                   "worker_above_idle_mb": (memory["peak"] - idle) / 2**20,
                   "client_peak_mb": client_rss / 2**20}
            out["sizes"].append(row)
            log(f"scale {n:,} docs: {seconds:.1f}s end to end, worker +{row['worker_above_idle_mb']:.0f}"
                f" MB above idle, client {row['client_peak_mb']:.0f} MB")
            if i in (0, len(sizes) - 1):
                run = max((tmp / "runs").glob(f"*-scale-{n}-*"))
                data = tmp / f"corpus-{n}.parquet"
                rows = corpus_file(cache, data)
                rc, p_seconds, p_rss = run_child(
                    ["predict", str(run), str(data), "-o", str(tmp / f"pred-{n}.parquet"),
                     "-c", str(LAB_CLUSTER)], env, tmp / f"predict-{n}.log")
                if rc != 0:
                    raise SystemExit(f"predict of {rows:,} rows failed (rc {rc}):\n"
                                     + (tmp / f"predict-{n}.log").read_text()[-3000:])
                single = predict_single_process(run / "model.joblib", data, tmp / "single-cache")
                out["predict"].append({"rows": rows, "seconds": p_seconds,
                                       "docs_per_s": rows / p_seconds,
                                       "single_docs_per_s": rows / single,
                                       "ratio": single / p_seconds,
                                       "client_peak_mb": p_rss / 2**20})
                log(f"predict {rows:,} rows: {p_seconds:.1f}s on the cluster, {single:.1f}s in one "
                    f"process; client {p_rss / 2**20:.0f} MB")
    first, last = out["sizes"][0], out["sizes"][-1]
    out["ratios"] = {
        "corpus": last["docs"] / first["docs"],
        "time": last["seconds"] / first["seconds"],
        "worker_memory_above_idle": last["worker_above_idle_mb"] / first["worker_above_idle_mb"],
        "client_memory_submit": last["client_peak_mb"] / first["client_peak_mb"],
    }
    if len(out["predict"]) == 2:
        out["ratios"]["client_memory_predict"] = (out["predict"][1]["client_peak_mb"]
                                                  / out["predict"][0]["client_peak_mb"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args(argv)
    result = measure(args.sizes, args.epochs, log=lambda s: print(s, file=sys.stderr))
    print(result["ratios"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
