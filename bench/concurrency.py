"""How much two busy processes get on this machine: the workers' training of one group of
partitions run alone, then two groups at once, in fresh (spawned) processes.

    PYTHONPATH=. .venv/bin/python bench/concurrency.py [--docs 100000]

Prints each one's seconds and the two-at-once throughput over one alone. On a machine with two
free cores that is near 2; on a shared one it can be below 1, and then no per-core figure (nor
the suite's ceiling) says much about daskfleet. A benchmark: nothing asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
from common import synthetic_job

from runner.batch import prepare_dataset, train
from runner.batch.reference import single_process_features


def run_group(args) -> float:
    group, classes, params, epochs = args
    t0 = time.perf_counter()
    state = None
    for epoch in range(epochs):
        state = train.mix_finish(epoch, train.train_partitions(group, state, classes, params,
                                                               epoch, 0))
    return time.perf_counter() - t0


def measure(docs: int = 100_000) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        job = synthetic_job(Path(tmp) / "job.yaml", f"throughput-{docs}", docs, 4.0)
        data = single_process_features(job, prepare_dataset(
            job, Path(".daskfleet/cache/datasets")).paths)
    X, y = data["X_train"], data["y_train"]
    ends = np.cumsum(data["train_part_rows"])
    parts = [{"X_train": X[a:b], "y_train": y[a:b]}
             for a, b in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True)]
    classes, params, epochs = sorted(set(y)), job.sgd_params(), job.model.epochs
    groups = [parts[0::2], parts[1::2]]
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:
        pool.map(run_group, [(groups[0], classes, params, 1)])  # warm: imports
        alone = pool.map(run_group, [(groups[0], classes, params, epochs)])[0]
    with spawn.Pool(2) as pool:
        pool.map(run_group, [(g, classes, params, 1) for g in groups])
        together = pool.map(run_group, [(g, classes, params, epochs) for g in groups])
    return {"alone_s": alone, "together_s": together,
            "two_at_once_over_one": 2 * alone / max(together)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    r = measure(ap.parse_args(argv).docs)
    print(f"one group alone {r['alone_s']:.2f}s; two at once "
          f"{', '.join(f'{s:.2f}s' for s in r['together_s'])}; throughput two at once / one "
          f"alone = {r['two_at_once_over_one']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
