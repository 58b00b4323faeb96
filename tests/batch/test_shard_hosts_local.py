"""A shard that lives on some hosts only (``data.copies``) is read there: the job trains the same
as with every shard everywhere, and a shard whose hosts have no worker fails the job with an
error that says what to do, after the scheduler's no-workers-timeout, instead of hanging."""

from __future__ import annotations

import json
import textwrap
import time

import dask
import pytest

from runner.batch import load_job, prepare_dataset, run_job
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


def test_reads_restricted_to_the_shards_hosts_train_the_same_model(strict_client, placed,
                                                                   tmp_path):
    job, paths = placed
    anywhere = run_job(strict_client, job, paths, tmp_path / "anywhere")
    here = run_job(strict_client, job, paths, tmp_path / "here",
                   shard_hosts=[["127.0.0.1"]] * len(paths))
    assert here["accuracy"] == anywhere["accuracy"] and here["n_train"] == anywhere["n_train"]


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
