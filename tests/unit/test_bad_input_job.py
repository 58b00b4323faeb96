"""Bad job files, through `daskfleet submit JOB -c CLUSTER` as a user runs it: exit status 2, one
message naming the job file, the key and what to do, before any run id, dataset or cluster
state exists (the runs folder, the dataset cache and .daskfleet/ are untouched)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from badinput import assert_clear_error, run_cli, snapshot


@dataclass(frozen=True)
class Case:
    id: str
    job: str  # the job file (data.path is relative to it: corpus.csv, corpus.parquet, docs/)
    names: tuple[str, ...]
    todo: str


FILES = "data: {source: files, path: corpus.csv}\n"

CASES = [
    Case("unknown key", "name: j\n" + FILES + "modle: {kind: sgd}\n",
         ("modle: unknown key",), "allowed: name, data, clean, features, split, model, search"),
    Case("unknown key in a section", "name: j\ndata: {source: files, path: corpus.csv, "
         "delimiter: ';'}\n", ("data.delimiter: unknown key",), "allowed: source, path"),
    Case("missing data", "name: j\nmodel: {kind: sgd}\n", ("data: required key is missing",),
         "e.g. data: {source: files, path: corpus.csv}"),
    Case("data file not found", "name: j\ndata: {source: files, path: nope.csv}\n",
         ("data.path: file not found", "nope.csv"), "fix the path"),
    Case("data path missing for files", "name: j\ndata: {source: files}\n",
         ("data.path: required",), "or give data.url"),
    Case("unknown format", "name: j\ndata: {source: files, path: corpus.csv, format: xlsx}\n",
         ("data.format",), "'parquet', 'csv', 'jsonl' or 'text-dirs'"),
    Case("format contradicts the file name", "name: j\ndata: {source: files, path: corpus.csv, "
         "format: parquet}\n", ("data.format: parquet does not match corpus.csv",),
         "remove data.format to read it as csv"),
    Case("file type not supported", "name: j\ndata: {source: files, path: notes.txt}\n",
         ("data.path: unsupported file type '.txt'",), "or set data.format"),
    Case("text-dirs on a file", "name: j\ndata: {source: files, path: corpus.csv, "
         "format: text-dirs}\n", ("data.format: text-dirs",), "one sub-folder per label"),
    Case("test_fraction 0", "name: j\n" + FILES + "split: {test_fraction: 0}\n",
         ("split.test_fraction", "greater than 0"), "above 0 and below 1, e.g. 0.2"),
    Case("test_fraction 1", "name: j\n" + FILES + "split: {test_fraction: 1}\n",
         ("split.test_fraction", "less than 1"), "above 0 and below 1, e.g. 0.2"),
    Case("test_fraction 1.0", "name: j\n" + FILES + "split: {test_fraction: 1.0}\n",
         ("split.test_fraction",), "e.g. 0.2"),
    Case("n_features not a power of two", "name: j\n" + FILES + "features: {n_features: 100000}\n",
         ("features.n_features", "got 100000"), "power of two from 16 to 16777216"),
    Case("n_features too large", "name: j\n" + FILES + "features: {n_features: 33554432}\n",
         ("features.n_features", "got 33554432"), "e.g. 262144 (2**18)"),
    Case("n_features too small", "name: j\n" + FILES + "features: {n_features: 8}\n",
         ("features.n_features", "got 8"), "power of two from 16"),
    Case("unknown model kind", "name: j\n" + FILES + "model: {kind: svm}\n",
         ("model.kind",), "'sgd', 'naive_bayes' or 'incremental'"),
    Case("search grid with an unknown parameter", "name: j\n" + FILES +
         "search: {grid: {alpha: [1.0e-5], eta0: [0.1]}}\n",
         ("search.grid.eta0: unknown parameter",), "searchable: alpha, loss"),
    Case("search grid parameter of another model", "name: j\n" + FILES +
         "model: {kind: naive_bayes}\nsearch: {grid: {loss: [hinge]}}\n",
         ("search.grid: loss cannot be searched for model.kind 'naive_bayes'",),
         "searchable: alpha"),
]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project with a cluster, a corpus, an earlier run and a dataset cache."""
    for var in ("DASKFLEET_STATE_DIR", "DASKFLEET_INVENTORY_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DASKFLEET_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache/daskfleet/datasets/0123").mkdir(parents=True)
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters/lab.yaml").write_text("name: lab\nprovider: lab\n")
    (tmp_path / ".daskfleet/lab").mkdir(parents=True)
    (tmp_path / ".daskfleet/lab/state.json").write_text('{"hosts": []}\n')
    (tmp_path / "runs/20250101-000000-j-abcd").mkdir(parents=True)
    (tmp_path / "runs/20250101-000000-j-abcd/status.json").write_text('{"status": "succeeded"}')
    (tmp_path / "corpus.csv").write_text("text,label\na b,x\nc d,y\n")
    (tmp_path / "notes.txt").write_text("a b\n")
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_job_file_is_refused_naming_it_and_changes_nothing(case, project, capsys):
    job = project / "job.yaml"
    job.write_text(case.job)
    before = snapshot(project)
    outcome = run_cli(["submit", str(job), "-c", str(project / "clusters/lab.yaml"),
                       "--runs-dir", str(project / "runs")], capsys)
    assert_clear_error(outcome, 2, (str(job), *case.names), case.todo)
    assert snapshot(project) == before
