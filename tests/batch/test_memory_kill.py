"""A task that takes its worker past the memory limit: the nanny kills the worker (for real, on a
LocalCluster of its own), the task is retried until the scheduler gives up (KilledWorker), and
the run's error names the memory limit, the kills the scheduler saw, and what to change."""

from __future__ import annotations

import time

import dask
import pytest

from runner.jobs.watch import RunWatch

distributed = pytest.importorskip("distributed")

LIMIT = 400 * 2**20


def grow_past_the_limit(mb: int) -> int:
    import numpy as np

    block = np.ones(mb * 2**20 // 8)  # touched: resident, not just reserved
    time.sleep(10)  # held until the nanny's memory monitor sees it
    return int(block.sum())


@pytest.fixture(scope="module")
def small_cluster():
    # two attempts in all: the kill is seen twice, then the task is given up
    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.worker.memory.monitor-interval": "50ms"}):
        with distributed.LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                                      memory_limit=LIMIT, dashboard_address=None) as cluster:
            with distributed.Client(cluster) as client:
                yield client


def test_a_worker_killed_by_its_nanny_for_memory_is_explained(small_cluster):
    client = small_cluster
    watch = RunWatch(client, "clusters/lab.yaml", "lab1", n_features=2**22, job_path="big.yaml")
    watch.start()
    future = client.submit(grow_past_the_limit, 3 * LIMIT // 2**20, pure=False)
    with pytest.raises(distributed.KilledWorker) as killed:
        future.result(timeout=120)
    error = RuntimeError(f"train (epoch 1) failed: KilledWorker: {killed.value}")
    error.__cause__ = killed.value
    message = str(watch.explain(error))
    assert message.startswith("the job's tasks killed every worker they ran on"), message
    # the nanny's kills, as the scheduler recorded them, with the size each worker reached
    assert "2 time(s) a worker's memory went past 95% of its limit" in message, message
    assert "memory limit is 0.39 GiB (dask.memory_limit in clusters/lab.yaml)" in message
    assert "4,194,304 x 4 bytes = 16 MiB per class" in message
    assert "Lower features.n_features in big.yaml" in message
    summary = watch.summary()
    assert len(summary["memory_kills"]) == 2, summary
    assert all(k["rss"] > 0.95 * LIMIT for k in summary["memory_kills"]), summary
