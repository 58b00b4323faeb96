"""`submit` keeps every run: folder and index row, for successes and failures (no SSH: the
cluster is a stand-in whose client is the local Dask cluster, and shipping is a no-op)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from runner.cli import main
from runner.errors import BatchError
from runner.jobs import runs, submit
from runner.jobs.ship import ShipResult


class LocalStandIn:
    def __init__(self, client):
        self._client = client
        self.spec = SimpleNamespace(name="local", provider="hosts")

    def client(self):
        return self._client

    def check_versions(self):
        return None

    def hosts(self):
        return []

    def worker_hosts(self):
        return []

    def live_worker_hosts(self, progress=None):
        return []

    def ssh(self):
        return None

    def status_record(self):
        return {"lock_hash": "abc123"}


@pytest.fixture
def no_shipping(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    monkeypatch.setattr(submit, "ship", lambda *a, **k: ShipResult({}, {}, {}))
    monkeypatch.setattr(submit, "datasets_cache", lambda: cache)
    # the workers read the shards where the control machine wrote them
    monkeypatch.setattr(submit, "remote_dir", lambda digest, cluster=None: str(cache / digest))


def fruit_job(folder: Path, name: str) -> Path:
    """A job file over a small corpus of three fruits (written beside it)."""
    rows = [{"text": f"{w} {w}s and more {i}", "label": w}
            for i in range(300) for w in ("apple", "pear", "plum")]
    pd.DataFrame(rows).to_csv(folder / "fruit.csv", index=False)
    job = folder / name
    job.write_text("name: fruit\ndata: {source: files, path: fruit.csv, shard_rows: 300}\n"
                   "model: {epochs: 1}\n")
    return job


def test_submit_records_success_and_failure(client, tmp_path, no_shipping, capsys):
    good = fruit_job(tmp_path, "good.yaml")
    runs_dir = tmp_path / "runs"
    result = submit.submit(LocalStandIn(client), good, runs_dir, progress=lambda line: None)
    assert json.loads((result.run_dir / "status.json").read_text())["status"] == "succeeded"
    assert (result.run_dir / "job.yaml").read_text() == good.read_text()
    log = (result.run_dir / "logs" / "run.log").read_text()
    assert log.startswith("run ") and "\nversions match" in log  # the run's id first
    assert "dataset shipped" in log and "evaluate:" in log
    report = (result.run_dir / "report.html").read_text()
    assert "abc123" in report and "local" in report

    (tmp_path / "one.csv").write_text("text,label\n" + "".join(f"w{i} x,only\n" for i in range(40)))
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("name: lonely\ndata: {source: files, path: one.csv}\n"))
    with pytest.raises(BatchError, match="one class only"):
        submit.submit(LocalStandIn(client), bad, runs_dir, progress=lambda line: None)

    (tmp_path / "nolabel.csv").write_text("text,topic\na b,x\n")
    worse = tmp_path / "worse.yaml"
    worse.write_text("name: nolabel\ndata: {source: files, path: nolabel.csv}\n")
    with pytest.raises(BatchError, match="the file has columns: text, topic"):
        submit.submit(LocalStandIn(client), worse, runs_dir, progress=lambda line: None)

    index = {r["job"]: r for r in runs.list_runs(runs_dir)}
    assert index["fruit"]["status"] == "succeeded" and index["fruit"]["accuracy"] > 0.9
    assert index["fruit"]["n_workers"] == 2 and index["fruit"]["duration_s"] > 0
    assert index["lonely"]["status"] == "failed" and "one class only" in index["lonely"]["error"]
    assert index["nolabel"]["status"] == "failed" and index["nolabel"]["accuracy"] is None
    for row in index.values():
        if row["status"] == "failed":
            folder = runs_dir / row["id"]
            assert not (folder / "metrics.json").exists() and (folder / "logs/run.log").exists()
    assert main(["runs", "--runs-dir", str(runs_dir)]) == 0
    table = capsys.readouterr().out
    assert table.count("failed") == 2 and table.count("succeeded") == 1


def test_predict_on_cluster_through_the_cli_path(client, tmp_path, no_shipping, monkeypatch):
    from runner.jobs import ship as ship_module
    from runner.jobs.predict import predict_on_cluster

    monkeypatch.setattr(ship_module, "ship", lambda *a, **k: ShipResult({}, {}, {}))
    monkeypatch.setattr(ship_module, "remote_dir", lambda digest, cluster=None: str(submit.datasets_cache() /
                                                                      digest))
    rows = [{"text": f"{w} {w}s and more {i}", "label": w}
            for i in range(100) for w in ("apple", "pear", "plum")]
    pd.DataFrame(rows).to_csv(tmp_path / "fruit.csv", index=False)
    good = tmp_path / "good.yaml"
    good.write_text("name: fruit\ndata: {source: files, path: fruit.csv, shard_rows: 100}\n"
                    "model: {kind: naive_bayes}\n")
    result = submit.submit(LocalStandIn(client), good, tmp_path / "runs",
                           progress=lambda line: None)
    pd.DataFrame({"body": ["plums", "apples and pears", None, "pear"]}).to_csv(
        tmp_path / "new.csv", index=False)
    lines: list[str] = []
    summary = predict_on_cluster(LocalStandIn(client), result.run_dir, tmp_path / "new.csv",
                                 tmp_path / "pred.parquet", progress=lines.append,
                                 text_column="body")
    out = pd.read_parquet(tmp_path / "pred.parquet")
    assert summary["rows"] == 4 and list(out["row"]) == [0, 1, 2, 3]
    assert out["prediction"][0] == "plum" and out["prediction"][3] == "pear"
    assert "accuracy" not in summary and any("predict: 4 rows" in line for line in lines)
    with pytest.raises(BatchError, match="model file not found"):
        predict_on_cluster(LocalStandIn(client), tmp_path / "nope.joblib", tmp_path / "new.csv",
                           tmp_path / "p2.parquet", progress=lines.append)


def test_the_cluster_files_results_take_every_run_the_job_files_own_win(
        client, tmp_path, no_shipping, capsys):
    """`results:` in the cluster file: a job file without its own copies its run folder there;
    a job file's own `results` wins. `runs show` names each artifact's copy."""
    from runner.batch.job import ResultsSpec

    plain = fruit_job(tmp_path, "plain.yaml")
    own = tmp_path / "own.yaml"
    own.write_text(plain.read_text() + f"results: {{path: 'file://{tmp_path}/own'}}\n")
    cluster = LocalStandIn(client)
    cluster.spec.results = ResultsSpec(path=f"file://{tmp_path}/team/")
    runs_dir = tmp_path / "runs"

    first = submit.submit(cluster, plain, runs_dir, progress=lambda line: None)
    copied = tmp_path / "team" / first.run_id
    assert (copied / "model.joblib").read_bytes() == (first.run_dir / "model.joblib").read_bytes()
    assert json.loads((copied / "status.json").read_text())["status"] == "succeeded"
    second = submit.submit(cluster, own, runs_dir, progress=lambda line: None)
    assert (tmp_path / "own" / second.run_id / "metrics.json").is_file()
    assert not (tmp_path / "team" / second.run_id).exists()

    details = runs.run_details(runs.get_run(runs_dir, first.run_id))
    assert details["results_url"] == f"file://{tmp_path}/team/{first.run_id}"
    assert details["artifacts"]["model.joblib"] == {
        "local": str(first.run_dir / "model.joblib"),
        "copy": f"file://{tmp_path}/team/{first.run_id}/model.joblib"}
    capsys.readouterr()
    assert main(["runs", "show", first.run_id, "--runs-dir", str(runs_dir)]) == 0
    shown = capsys.readouterr().out
    assert (f"  {first.run_dir / 'metrics.json'}  (copy: file://{tmp_path}/team/{first.run_id}/"
            "metrics.json)") in shown, shown
