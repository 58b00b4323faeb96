"""Many small jobs in a row on one reused LocalCluster, every model kind and option mixed: the
hunt for intermittent batch failures (issue: "no partition had training rows", seen once in a
fresh-clone CI run and once in `make bench`, never reproduced since). Not a benchmark figure:
it prints each failure with its job and the count.

    PYTHONPATH=. .venv/bin/python bench/batch_stress.py --jobs 400
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import textwrap
from pathlib import Path

EXTRAS = [
    "clean: {stem: english}\nmodel: {epochs: 2}\n",
    "model: {epochs: 2}\n",
    "model: {kind: naive_bayes, variant: multinomial}\n",
    "model: {epochs: 2}\nsearch: {grid: {alpha: [0.00001, 10.0], loss: [hinge, log_loss]}}\n",
    "model: {kind: incremental, epochs: 2}\n",
    "features: {n_features: 4096, tfidf: true}\nmodel: {epochs: 3}\n",
    "features: {n_features: 4096, cache: false}\nmodel: {epochs: 2}\n",
]
WORDS = {"sports": ["match", "goal", "team", "league", "referee"],
         "cooking": ["recipe", "oven", "flour", "sauce", "garlic"],
         "music": ["guitar", "chord", "album", "melody", "tempo"]}


def corpus(folder: Path, n: int = 900) -> None:
    import pandas as pd

    rng = random.Random(3)
    rows = [{"text": " ".join(rng.choices(WORDS[label], k=5)) + f" n{i}", "label": label}
            for i, label in ((i, list(WORDS)[i % 3]) for i in range(n))]
    pd.DataFrame(rows).to_csv(folder / "topics.csv", index=False)


def main(argv: list[str] | None = None) -> int:
    import distributed

    from runner.batch import load_job, prepare_dataset, run_job

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="daskfleet-stress-"))
    corpus(tmp)
    rng = random.Random(args.seed)
    failures = 0
    with (distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
          as cluster, distributed.Client(cluster) as client):
        for i in range(args.jobs):
            extra = rng.choice(EXTRAS)
            path = tmp / f"j{i}.yaml"
            path.write_text(textwrap.dedent(f"""\
                name: j{i}
                data: {{source: files, path: topics.csv, shard_rows: 200}}
                features: {{n_features: 4096}}
                """) + extra)
            try:
                job = load_job(path)
                dataset = prepare_dataset(job, tmp / "cache")
                run_job(client, job, [str(p) for p in dataset.paths], tmp / "runs" / f"j{i}",
                        progress=lambda line: None)
            except Exception as e:  # noqa: BLE001 - every failure is what this hunts for
                failures += 1
                print(f"job {i} FAILED ({extra!r}): {type(e).__name__}: {e}", flush=True)
            if (i + 1) % 20 == 0:
                print(f"{i + 1} jobs, {failures} failed", file=sys.stderr, flush=True)
    print(f"{failures} of {args.jobs} jobs failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
