"""The run index (runs/index.sqlite) and the `daskfleet runs` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.batch.artifacts import write_failed_run, write_json_atomic
from runner.cli import main
from runner.errors import BatchError
from runner.jobs import runs


def make_run(runs_dir: Path, run_id: str, status: str, **extra) -> Path:
    run_dir = runs_dir / run_id
    (run_dir / "logs").mkdir(parents=True)
    write_json_atomic(run_dir / "status.json", {
        "run_id": run_id, "job": "topics", "status": status, "run_dir": str(run_dir), **extra})
    return run_dir


def test_record_and_list_newest_first(tmp_path):
    ok = make_run(tmp_path, "20260101-000000-topics-aaaa", "succeeded", accuracy=0.9,
                  macro_f1=0.8, duration_s=12.5, n_workers=2, started_at="2026-01-01T00:00:00")
    runs.record_run_dir(tmp_path, ok)
    write_failed_run(tmp_path / "20260102-000000-topics-bbbb",
                     {"run_id": "20260102-000000-topics-bbbb", "job": "topics",
                      "started_at": "2026-01-02T00:00:00",
                      "run_dir": str(tmp_path / "20260102-000000-topics-bbbb")},
                     BatchError("load failed on shard x.parquet"), ["dataset prepared"])
    runs.record_run_dir(tmp_path, tmp_path / "20260102-000000-topics-bbbb")
    rows = runs.list_runs(tmp_path)
    assert [r["status"] for r in rows] == ["failed", "succeeded"]
    assert rows[0]["error"] == "load failed on shard x.parquet" and rows[0]["accuracy"] is None
    assert rows[1]["accuracy"] == 0.9 and rows[1]["n_workers"] == 2
    log = (tmp_path / "20260102-000000-topics-bbbb" / "logs" / "run.log").read_text()
    assert log == "dataset prepared\nfailed: load failed on shard x.parquet\n"
    # re-recording the same run replaces its row
    runs.record_run_dir(tmp_path, ok)
    assert len(runs.list_runs(tmp_path)) == 2


def test_get_run_by_prefix_and_errors(tmp_path):
    for rid in ("20260101-000000-a-0001", "20260101-000000-a-0002"):
        runs.record_run_dir(tmp_path, make_run(tmp_path, rid, "succeeded"))
    assert runs.get_run(tmp_path, "20260101-000000-a-0002")["id"].endswith("0002")
    with pytest.raises(BatchError, match="ambiguous"):
        runs.get_run(tmp_path, "20260101")
    with pytest.raises(BatchError, match="no run 'zzz'"):
        runs.get_run(tmp_path, "zzz")
    with pytest.raises(BatchError, match="no run index"):
        runs.list_runs(tmp_path / "elsewhere")
    with pytest.raises(BatchError, match="not a daskfleet run folder"):
        runs.record_run_dir(tmp_path, tmp_path / "nothing")


def test_cli_runs_table_json_and_show(tmp_path, capsys):
    run_dir = make_run(tmp_path, "r-1", "succeeded", accuracy=0.75, macro_f1=0.5, duration_s=3.0,
                       n_workers=2, started_at="2026-01-01T00:00:00")
    (run_dir / "metrics.json").write_text(json.dumps({
        "model": "sgd", "accuracy": 0.75, "macro_f1": 0.5, "majority_rate": 0.4, "n_train": 80,
        "n_test": 20, "n_classes": 3, "dropped_rows": 1, "timings": {"load": 1.0}}))
    runs.record_run_dir(tmp_path, run_dir)
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "r-1" in out and "0.7500" in out and "succeeded" in out and "3.0s" in out
    assert main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["macro_f1"] == 0.5
    assert main(["runs", "--runs-dir", str(tmp_path), "show", "r-1"]) == 0
    out = capsys.readouterr().out
    assert "accuracy 0.7500, macro-F1 0.5000" in out and "metrics.json" in out
    assert main(["runs", "--runs-dir", str(tmp_path), "show", "nope"]) == 1
    assert "no run 'nope'" in capsys.readouterr().err


def test_cli_predict_arguments():
    from runner.cli import parser

    args = parser().parse_args(["predict", "runs/r1", "new.csv", "-o", "out.parquet",
                                "-c", "clusters/x.yaml"])
    assert (args.model, args.data, args.out, args.cluster) == (
        "runs/r1", "new.csv", "out.parquet", "clusters/x.yaml")
    assert args.text_column == "text"
    with pytest.raises(SystemExit):
        parser().parse_args(["predict", "m", "d"])  # -o is required
