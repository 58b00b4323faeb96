"""A shard that lives on some hosts only (``data.copies``) is read there: the job trains the same
as with every shard everywhere, and a shard whose hosts have no worker fails the job with an
error that says what to do, after the scheduler's no-workers-timeout, instead of hanging."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import time

import dask
import numpy as np
import pytest
from dask.utils import key_split

from runner.batch import load_job, load_model, prepare_dataset, run_job
from runner.errors import BatchError

distributed = pytest.importorskip("distributed")

JOB = """\
name: placed
data:
  source: synthetic
  synthetic: {n_docs: 3000, n_classes: 3, vocab_size: 1500, doc_len: 25, noise: 0.02, seed: 5}
  shard_rows: 500
  copies: 1
features: {n_features: 16384}
model: {kind: sgd, epochs: 2}
"""


@pytest.fixture(scope="module")
def strict_client():
    """Workers on 127.0.0.1, and a scheduler that fails unrunnable tasks after 2 s."""
    with dask.config.set({"distributed.scheduler.no-workers-timeout": "2s"}):
        with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                      dashboard_address=None, host="127.0.0.1") as cluster:
            with distributed.Client(cluster) as c:
                yield c


@pytest.fixture
def placed(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(JOB))
    job = load_job(path)
    dataset = prepare_dataset(job, tmp_path / "cache")
    return job, [str(p) for p in dataset.paths]


def test_a_shard_whose_hosts_have_no_worker_fails_the_job_and_says_why(strict_client, placed,
                                                                       tmp_path):
    job, paths = placed
    gone = [["127.0.0.1"]] * (len(paths) - 1) + [["198.18.0.99"]]  # the last on a lost host
    t = time.monotonic()
    with pytest.raises(BatchError) as e:
        run_job(strict_client, job, paths, tmp_path / "lost", shard_hosts=gone)
    assert time.monotonic() - t < 120
    message = str(e.value)
    assert "NoValidWorkerError" in message and "data.copies" in message, message
    assert paths[-1] in message, message  # the shard is named
    status = json.loads((tmp_path / "lost" / "status.json").read_text())
    assert status["status"] == "failed", status  # recorded as failed, as any failed run


# -- shards on one host each, with a disk of its own ------------------------------------------

UNCACHED = JOB.replace("features: {n_features: 16384}",
                       "features: {n_features: 16384, cache: false}")
HOSTS = ["127.0.0.1", "127.0.0.2"]


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    """A worker on each of two loopback addresses (two "hosts"), each working in a folder of
    its own: a relative shard path exists on the host the shard was placed on only, as on
    hosts with disks of their own."""
    from distributed import Nanny, Scheduler, SpecCluster

    disks = {h: tmp_path_factory.mktemp(f"disk-{h}") for h in HOSTS}
    spec = {h: {"cls": Nanny, "options": {"host": h, "nthreads": 1}} for h in HOSTS}
    with SpecCluster(workers=spec, scheduler={"cls": Scheduler, "options": {
            "host": "127.0.0.1", "dashboard": False}}) as cluster:
        with distributed.Client(cluster) as c:
            c.wait_for_workers(2)
            for address, info in c.scheduler_info()["workers"].items():
                c.run(os.chdir, str(disks[info["host"]]), workers=[address])
            yield c, disks


def _placed_on_one_host_each(job, disks, cache_dir):
    """The job's shards, each copied to one host's disk (``ship.placement``, copies 1): the
    relative paths and, per shard, its host."""
    from runner.jobs.ship import placement

    dataset = prepare_dataset(job, cache_dir)
    where = placement({p.name: p.stat().st_size for p in dataset.paths}, HOSTS, 1)
    for p in dataset.paths:
        (disks[where[p.name][0]] / "data").mkdir(exist_ok=True)
        shutil.copy(p, disks[where[p.name][0]] / "data" / p.name)
    assert {hosts[0] for hosts in where.values()} == set(HOSTS)  # both hosts hold some
    return [f"data/{p.name}" for p in dataset.paths], [where[p.name] for p in dataset.paths]


@pytest.mark.parametrize("kind", ["sgd", "naive_bayes"])
def test_without_the_cache_each_shard_is_rebuilt_on_its_own_host(two_hosts, tmp_path, kind):
    """features.cache: false with each shard on one host: every partition is rebuilt where its
    shard is (a read elsewhere finds no file), and the model is the cached run's, bit for bit."""
    client, disks = two_hosts
    models = {}
    for cache, text in (("cached", JOB), ("uncached", UNCACHED)):
        path = tmp_path / f"{cache}.yaml"
        path.write_text(text.replace("kind: sgd, epochs: 2", f"kind: {kind}"))
        job = load_job(path)
        paths, holders = _placed_on_one_host_each(job, disks, tmp_path / "cache")
        with distributed.get_task_stream(client) as stream:
            metrics = run_job(client, job, paths, tmp_path / cache, shard_hosts=holders)
        models[cache] = (metrics, load_model(tmp_path / cache)["classifier"], stream.data)
    (cached, a, _), (uncached, b, tasks) = models["cached"], models["uncached"]
    for key in ("n_train", "n_test", "confusion_matrix", "accuracy", "macro_f1"):
        assert uncached[key] == cached[key], key
    for attr in ("coef_", "intercept_", "feature_log_prob_"):
        if hasattr(a, attr):
            assert np.array_equal(getattr(a, attr), getattr(b, attr)), attr
    assert cached["accuracy"] > 0.5, cached
    fetched = [t for t in tasks if key_split(t["key"]) == "shard_features"]
    if kind == "naive_bayes":  # one task per partition, or a group per worker: all in place
        assert not fetched, fetched
    else:
        # 3000 rows mix one model (train.MIN_MODEL_ROWS): one worker trains it, and the shards
        # of the other host are rebuilt there and only the partitions come over
        assert uncached["mixed_models"] == 1
        assert fetched, "the other host's shards were not rebuilt where they are"
