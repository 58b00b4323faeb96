"""A worker replaced in the middle of a training, as a rolling restart replaces it (`up` after a
thread-count change, `rotate`: retire one worker, start its replacement, wait until it joins),
leaves the job's model as it was: the same accuracy and the same weights as a run that nobody
disturbed. The scheduler computes again, elsewhere, whatever the retired worker held; nothing of
the training is lost or counted twice. (The e2e tier rolls real workers under a running job:
tests/e2e/test_4_day2.py.)"""

from __future__ import annotations

import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from runner.batch import load_job, load_model, prepare_dataset, run_job
from runner.batch.synthetic import generate

EPOCHS = 5


@pytest.fixture
def rolling():
    """A cluster of its own: the test replaces one of its workers."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield cluster, client


def _roll_one(cluster: LocalCluster, client: Client) -> tuple[str, str]:
    """What a rolling restart does to one worker: retire it (its results move to the other),
    start a replacement, wait until it joins. Returns (the retired address, the new one)."""
    before = set(client.scheduler_info()["workers"])
    cluster.scale(1)  # retires one worker gracefully (SpecCluster: retire_workers, then close)
    client.wait_for_workers(1)
    while len(client.scheduler_info()["workers"]) != 1:
        client.sync(lambda: __import__("asyncio").sleep(0.05))
    cluster.scale(2)
    client.wait_for_workers(2, timeout=60)
    # the scheduler's list can lag the count under load (one flaky run found no new address)
    deadline = time.monotonic() + 60
    while True:
        after = set(client.scheduler_info()["workers"])
        if len(before - after) == 1 and len(after - before) == 1:
            break
        assert time.monotonic() < deadline, f"no single worker replaced: {before} -> {after}"
        time.sleep(0.1)
    (gone,), (new,) = before - after, after - before
    return gone, new


def test_a_worker_replaced_mid_training_leaves_the_model_as_it_was(rolling, tmp_path):
    cluster, client = rolling
    docs = pd.DataFrame(list(generate(4000, 4, 800, 20, 0.1, 3)), columns=["text", "label"])
    docs.to_csv(tmp_path / "docs.csv", index=False)
    (tmp_path / "job.yaml").write_text(textwrap.dedent(f"""\
        name: roll
        data: {{source: files, path: docs.csv, shard_rows: 500}}
        features: {{n_features: 16384}}
        model: {{kind: sgd, epochs: {EPOCHS}}}
        """))
    job = load_job(tmp_path / "job.yaml")
    paths = [str(p) for p in prepare_dataset(job, tmp_path / "cache").paths]

    undisturbed = run_job(client, job, paths, tmp_path / "runs" / "undisturbed",
                          progress=lambda line: None)
    rolled: list[tuple[str, str]] = []
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if line.startswith("train: epoch 2/") and not rolled:
            rolled.append(_roll_one(cluster, client))

    replaced = run_job(client, job, paths, tmp_path / "runs" / "replaced", progress=progress)
    assert rolled, lines  # the roll happened, mid-training
    gone, new = rolled[0]
    assert gone != new and new in client.scheduler_info()["workers"]
    assert any(line.startswith(f"train: epoch {EPOCHS}/") for line in lines), lines
    assert replaced["epochs"] == undisturbed["epochs"] == EPOCHS
    assert replaced["n_train"] == undisturbed["n_train"]
    assert replaced["accuracy"] == undisturbed["accuracy"], (replaced, undisturbed)
    assert 0.5 < replaced["accuracy"] < 1.0  # a model that learned, on a task it can miss
    same = load_model(tmp_path / "runs" / "undisturbed")["classifier"].coef_
    after_roll = load_model(tmp_path / "runs" / "replaced")["classifier"].coef_
    np.testing.assert_allclose(after_roll, same)
