"""A corpus read where it lives: the workers list, read and deal an object store's objects (the
lab's S3 server, IAM enforced, on loopback) and a shared filesystem's files; bad input is a
clear error before any training."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from runner.batch import load_job, run_job
from runner.batch.synthetic import generate
from runner.errors import BatchError

boto3 = pytest.importorskip("boto3")
REPO = Path(__file__).resolve().parents[2]
N_DOCS = 6000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The lab's object store process (runner.lab.objectstore), here on loopback."""
    state = tmp_path_factory.mktemp("store")
    port = _free_port()
    log = open(state / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "runner.lab.objectstore", "--host",
                             "127.0.0.1", "--port", str(port), "--state", str(state)],
                            cwd=REPO, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (state / "credentials.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, \
            (state / "server.log").read_text()
        time.sleep(0.1)
    creds = json.loads((state / "credentials.json").read_text())
    s3 = boto3.client("s3", endpoint_url=creds["endpoint"], region_name=creds["region"],
                      aws_access_key_id=creds["key"], aws_secret_access_key=creds["secret"])
    s3.create_bucket(Bucket="corpus")
    docs = pd.DataFrame(list(generate(N_DOCS, 4, 2000, 30, 0.05, 7)), columns=["body", "topic"])
    # stored label by label, one object per label: the workers must deal the rows
    for label, group in docs.groupby("topic"):
        s3.put_object(Bucket="corpus", Key=f"sorted/{label}.csv",
                      Body=group.to_csv(index=False).encode())
        s3.put_object(Bucket="corpus", Key=f"mixed/{label}.csv",
                      Body=group.to_csv(index=False).encode())
    s3.put_object(Bucket="corpus", Key="mixed/extra.jsonl", Body=b'{"body": "a", "topic": "b"}\n')
    s3.put_object(Bucket="corpus", Key="sorted/_SUCCESS", Body=b"")
    yield {**creds, "s3": s3, "docs": docs}
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()


def _job(folder: Path, path: str, options: dict | None, **data) -> Path:
    section = {"source": "files", "path": path, "text_column": "body", "label_column": "topic",
               **({"storage_options": options} if options is not None else {}), **data}
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "in-place", "data": section,
                                   "model": {"kind": "sgd", "epochs": 3}}))
    return job


def _options(store, **over) -> dict:
    return {"endpoint_url": store["endpoint"], "key": store["key"], "secret": store["secret"],
            "region": store["region"], **over}


def test_a_label_sorted_corpus_in_an_object_store_trains_as_well_as_from_a_local_file(
        client, store, tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    lines: list[str] = []
    job = load_job(_job(tmp_path, "s3://corpus/sorted/", _options(store)))
    metrics = run_job(client, job, None, tmp_path / "s3run", progress=lines.append)
    assert metrics["data_objects"] == 4  # the _SUCCESS marker is not data
    assert metrics["rows"] == N_DOCS
    assert metrics["n_partitions"] >= 2
    assert any("read by the workers" in line for line in lines)

    local = tmp_path / "local.csv"
    store["docs"].to_csv(local, index=False)
    from runner.batch import prepare_dataset

    (tmp_path / "l").mkdir()
    local_job = load_job(_job(tmp_path / "l", str(local), None))
    dataset = prepare_dataset(local_job, tmp_path / "cache")
    baseline = run_job(client, local_job, [str(p) for p in dataset.paths], tmp_path / "localrun",
                       progress=lambda _: None)
    # the same rows, the same split; dealt otherwise, mixed otherwise: the same accuracy, near
    assert metrics["n_test"] == baseline["n_test"]
    assert abs(metrics["accuracy"] - baseline["accuracy"]) < 0.03, (metrics["accuracy"],
                                                                    baseline["accuracy"])
    # sorted by label, not dealt, most partitions would hold one label: accuracy shows it
    assert metrics["accuracy"] > 0.8


def test_credentials_from_the_standard_environment_variables(client, store, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", store["endpoint"])
    monkeypatch.setenv("AWS_REGION", store["region"])
    job = load_job(_job(tmp_path, "s3://corpus/sorted/*.csv", None,
                        limit=3000))
    metrics = run_job(client, job, None, tmp_path / "run", progress=lambda _: None)
    assert 2500 < metrics["rows"] < 3500  # about limit rows: a stable sample by text hash
    # nothing secret is written into the run folder
    folder_text = "".join(p.read_text(errors="replace") for p in (tmp_path / "run").rglob("*")
                          if p.is_file() and p.suffix in (".json", ".log", ".html", ".yaml"))
    assert store["secret"] not in folder_text


@pytest.mark.parametrize(("path", "over", "words"), [
    ("s3://corpus/sorted/", {"endpoint_url": "http://127.0.0.1:1"},
     "cannot reach the object store at http://127.0.0.1:1"),
    ("s3://no-such-bucket/x/", {}, "bucket 'no-such-bucket' does not exist"),
    ("s3://corpus/nothing-here/", {}, "matches no object"),
    ("s3://corpus/sorted/*.parquet", {}, "matches no object"),
    ("s3://corpus/sorted/", {"secret": "wrong"}, "refused the credentials"),
    ("s3://corpus/sorted/", {"key": "AKIAWRONGWRONGWRONG0"}, "refused the credentials"),
    ("s3://corpus/mixed/", {}, "matches files of several formats (csv, jsonl"),
])
def test_bad_object_store_input_is_a_clear_error_before_training(client, store, tmp_path,
                                                                  monkeypatch, path, over, words):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    lines: list[str] = []
    job = load_job(_job(tmp_path, path, _options(store, **over)))
    with pytest.raises(BatchError) as info:
        run_job(client, job, None, tmp_path / "run", progress=lines.append)
    assert words in str(info.value)
    assert f"data.path {path}" in str(info.value)
    assert not any(line.startswith(("clean:", "train")) for line in lines)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and not (tmp_path / "run" / "model.joblib").exists()


def test_a_shared_filesystem_is_read_by_the_workers(client, store, tmp_path):
    """file://: a folder every node mounts at the same path (here the workers share this
    machine's disk); jsonl and parquet, several objects, read in place."""
    shared = tmp_path / "shared"
    shared.mkdir()
    docs = store["docs"]
    half = len(docs) // 2
    docs.iloc[:half].to_parquet(shared / "a.parquet")
    docs.iloc[half:].to_parquet(shared / "b.parquet")
    (shared / ".hidden.parquet").write_bytes(b"not parquet")  # hidden files are not data
    job = load_job(_job(tmp_path, f"file://{shared}/", None,
                        on_error="skip", partition_mb=0.05))
    metrics = run_job(client, job, None, tmp_path / "run", progress=lambda _: None)
    assert metrics["data_objects"] == 2 and metrics["rows"] == N_DOCS
    assert metrics["n_partitions"] > 4  # partition_mb is honoured: many small partitions
    assert metrics["accuracy"] > 0.8


def test_an_unreadable_object_is_skipped_or_fails_naming_it(client, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    docs = pd.DataFrame(list(generate(800, 2, 300, 20, 0.05, 3)), columns=["body", "topic"])
    docs.to_csv(shared / "good.csv", index=False)
    (shared / "bad.csv").write_bytes(b"body,topic\n\"unterminated,x\n" + b"\xff" * 10)
    (shared / "bad.parquet").write_bytes(b"PAR1 truncated")
    glob = f"file://{shared}/*.parquet"
    with pytest.raises(BatchError, match=r"bad.parquet: cannot read as parquet"):
        run_job(client, load_job(_job(tmp_path, glob, None)), None, tmp_path / "r1",
                progress=lambda _: None)
    with pytest.raises(BatchError, match=r"hold no rows \(1 unreadable, skipped\)"):
        run_job(client, load_job(_job(tmp_path, glob, None, on_error="skip")), None,
                tmp_path / "r2", progress=lambda _: None)


def _with_results(job: Path, path: str, options: dict) -> Path:
    spec = yaml.safe_load(job.read_text())
    spec["results"] = {"path": path, "storage_options": options}
    job.write_text(yaml.safe_dump(spec))
    return job


def test_a_run_folder_is_copied_to_the_results_store_and_indexed(client, store, tmp_path):
    from runner.jobs import runs

    store["s3"].create_bucket(Bucket="results")
    job = load_job(_with_results(_job(tmp_path, "s3://corpus/sorted/*.csv", _options(store),
                                      limit=2000), "s3://results/team/", _options(store)))
    run_dir = tmp_path / "runs" / "20261202-080000-in-place-abcd"
    lines: list[str] = []
    run_job(client, job, None, run_dir, context={"run_id": run_dir.name}, progress=lines.append)
    url = f"s3://results/team/{run_dir.name}"
    assert f"results: run folder copied to {url}/" in lines
    local = {p.relative_to(run_dir).as_posix(): p.read_bytes()
             for p in run_dir.rglob("*") if p.is_file()}
    listed = store["s3"].list_objects_v2(Bucket="results", Prefix=f"team/{run_dir.name}/")
    stored = {o["Key"].split(f"{run_dir.name}/", 1)[1]: store["s3"].get_object(
        Bucket="results", Key=o["Key"])["Body"].read() for o in listed["Contents"]}
    assert stored == local and {"model.joblib", "metrics.json", "status.json"} <= set(stored)
    assert json.loads(stored["status.json"])["results_url"] == url
    row = runs.record_run_dir(tmp_path / "runs", run_dir)
    assert runs.get_run(tmp_path / "runs", run_dir.name)["results_url"] == url == row["results_url"]


def test_a_results_store_that_cannot_be_written_is_refused_before_training(client, store,
                                                                            tmp_path):
    lines: list[str] = []
    job = load_job(_with_results(_job(tmp_path, "s3://corpus/sorted/*.csv", _options(store)),
                                 "s3://no-results-bucket/x", _options(store)))
    with pytest.raises(BatchError, match=r"results\.path s3://no-results-bucket/x: bucket "
                                         r"'no-results-bucket' does not exist"):
        run_job(client, job, None, tmp_path / "run", progress=lines.append)
    assert not any(line.startswith(("clean:", "train")) for line in lines)
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "failed"
