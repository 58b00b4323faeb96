"""A corpus in the lab's object store (an S3 API on a lab host of its own), read by the workers
of the lab cluster: nothing of it passes through the control machine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from objectstore import object_store

from runner.batch import load_job
from runner.batch.reference import single_process_features, single_process_fit
from runner.batch.synthetic import generate
from runner.cluster import Cluster
from runner.cluster.ssh import connect
from runner.jobs.ship import DATA_DIR
from runner.lab.addresses import BRIDGE, OBJECT_STORE

REPO = Path(__file__).resolve().parents[2]
LAB_CLUSTER = REPO / "clusters" / "lab.yaml"
BRIDGE_TX = Path(f"/sys/class/net/{BRIDGE}/statistics/tx_bytes")

pytestmark = pytest.mark.e2e


def _data_dirs() -> dict[str, str]:
    """What each worker host holds under the shipped-datasets folder."""
    seen = {}
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        for host in cluster.hosts():
            with connect(host, cluster.ssh()) as c:
                seen[host.name] = c.run(f"ls -1 {DATA_DIR}/lab 2>/dev/null || true",
                                        warn=True).stdout
    return seen


def _memory_limits() -> dict[str, int]:
    from runner.dask_workers import joined_workers

    with Cluster.from_file(LAB_CLUSTER) as cluster:
        return {w["name"]: w["memory_limit"] for w in joined_workers(cluster.client()).values()}


def test_the_lab_has_an_object_store_and_workers_train_from_it(lab_cluster, cli, workdir):
    store = object_store(cli)  # added to the running lab
    assert store.endpoint == f"http://{OBJECT_STORE}:9000" and store.up is True
    s3 = store.client()
    s3.create_bucket(Bucket="team-corpora")
    # 110,000 documents: 88,000 training rows, enough for 8 mixed models of 10,000 rows
    docs = pd.DataFrame(list(generate(110_000, 6, 4000, 20, 0.05, 11)), columns=["text", "label"])
    corpus_bytes = 0
    for label, group in docs.groupby("label"):  # stored label by label, as a team's export is
        body = group.to_parquet(index=False)
        corpus_bytes += len(body)
        s3.put_object(Bucket="team-corpora", Key=f"reviews/{label}.parquet", Body=body)

    job = workdir / "in-place.yaml"
    job.write_text("name: in-place\ndata:\n  source: files\n"
                   "  path: s3://team-corpora/reviews/*.parquet\n"
                   "features: {n_features: 65536}\nmodel: {kind: sgd, epochs: 3}\n")
    before_dirs = _data_dirs()
    env = {**cli.env, **store.aws_variables()}
    runs = workdir / "in-place-runs"  # the session's runs/ is the walking skeleton's
    at_2 = _memory_limits()
    cli("scale", "8", "-c", str(LAB_CLUSTER), timeout=300)  # four workers on each worker host
    at_8 = _memory_limits()
    try:
        sent_before = int(BRIDGE_TX.read_text())
        proc = type(cli)(cli.workdir, env)("submit", str(job), "-c", str(LAB_CLUSTER),
                                           "--runs-dir", str(runs), timeout=600)
        sent = int(BRIDGE_TX.read_text()) - sent_before
    finally:
        cli("scale", "2", "-c", str(LAB_CLUSTER), timeout=300)
    # the two workers left have the memory limit they had before (their host alone), not the
    # quarter share they ran with at 8: replaced one at a time by `scale 2`
    assert len(at_8) == 8 and max(at_8.values()) < min(at_2.values()) / 2, (at_2, at_8)
    assert _memory_limits() == at_2, (at_2, at_8)
    out = proc.stdout + proc.stderr
    assert "read by the workers" in out and "shipped" not in out, out
    run_id = re.search(r"run (\S+)", out)
    run_dir = max(runs.glob("*-in-place-*"), key=lambda p: p.stat().st_mtime)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["rows"] == 110_000 and metrics["data_objects"] == 6
    assert metrics["n_workers"] == 8 and metrics["mixed_models"] == 8, metrics["mixed_models"]
    # 8 models mixed hold the accuracy of one scikit-learn process on the same rows, split and
    # features (computed here, from the same documents)
    local = workdir / "in-place-local.parquet"
    docs.to_parquet(local, index=False)
    single = single_process_fit(load_job(job), single_process_features(load_job(job), [local]),
                                "sgd")
    print(f"accuracy: 8 workers {metrics['accuracy']:.4f}, one process {single['accuracy']:.4f}")
    assert metrics["accuracy"] >= single["accuracy"] - 0.01, (run_id, metrics, single)
    assert metrics["accuracy"] > 0.8
    # the corpus went from the store to the workers: the control machine sent only the task
    # graph and the cluster's chatter (it sends about data.copies x the corpus when it ships a
    # local corpus)
    print(f"control machine sent {sent:,} bytes for a corpus of {corpus_bytes:,} bytes "
          f"({100 * sent / corpus_bytes:.2f} %)")
    assert sent < corpus_bytes / 10, (sent, corpus_bytes)
    assert _data_dirs() == before_dirs  # nothing was shipped to the workers' disks
    assert store.secret not in "".join(p.read_text(errors="replace")
                                          for p in run_dir.rglob("*") if p.is_file()
                                          and p.suffix in (".json", ".log", ".yaml", ".html"))
    # predict from the store into the store: the workers list and read the objects, and write
    # the parts; the control machine only sends the model and reads the counts
    for i in range(2):
        part = docs.iloc[i * 1500:(i + 1) * 1500]
        s3.put_object(Bucket="team-corpora", Key=f"to-score/batch-{i}.parquet",
                      Body=part.to_parquet(index=False))
    s3.create_bucket(Bucket="team-predictions")
    out = type(cli)(cli.workdir, env)("predict", str(run_dir), "s3://team-corpora/to-score/",
                                      "-o", "s3://team-predictions/week-1/", "-c",
                                      str(LAB_CLUSTER), timeout=300).stdout
    assert "2 object(s)" in out and "read by the workers" in out, out
    assert "3000 predictions written to s3://team-predictions/week-1/" in out, out
    keys = sorted(o["Key"] for o in s3.list_objects_v2(
        Bucket="team-predictions", Prefix="week-1/")["Contents"])
    assert keys == ["week-1/_daskfleet_predict.json", "week-1/part-00000.parquet",
                    "week-1/part-00001.parquet"], keys
    import io

    part = pd.read_parquet(io.BytesIO(s3.get_object(
        Bucket="team-predictions", Key="week-1/part-00001.parquet")["Body"].read()))
    assert len(part) == 1500 and set(part["source"]) == {"s3://team-corpora/to-score/batch-1.parquet"}
    assert (part["label"] == part["prediction"]).mean() > 0.8
