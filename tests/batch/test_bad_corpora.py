"""Bad corpora, prediction input and model files, through `daskfleet submit` and `daskfleet
predict` as a user runs them (the cluster is the local Dask cluster behind a stand-in; shipping
is a no-op). Each refused case: exit status 1, one message naming the file (or key) and what to
do, the run recorded as failed with no model or metrics, no dataset published in the cache and
no half-written file anywhere. Accepted-with-a-warning cases say so in the run's log."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import joblib
import pandas as pd
import pytest
from badinput import assert_clear_error, leftovers, run_cli, snapshot
from test_submit_local import LocalStandIn

from runner.batch import split
from runner.batch.job import load_job
from runner.cluster import Cluster
from runner.jobs import ship as ship_module
from runner.jobs import submit
from runner.jobs.ship import ShipResult

WORDS = {"apple": "apple apples orchard", "pear": "pear pears juicy", "plum": "plum plums purple"}


def rows(n: int = 30) -> list[dict]:
    return [{"text": f"{words} {i}", "label": label}
            for i in range(n) for label, words in WORDS.items()]


def csv_of(frame_rows) -> Callable[[Path], None]:
    return lambda path: pd.DataFrame(frame_rows).to_csv(path, index=False)


def empty(path: Path) -> None:
    path.write_bytes(b"")


def header_only(path: Path) -> None:
    path.write_text("text,label\n")


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(20_000))


def gzipped_csv(path: Path) -> None:
    path.write_bytes(gzip.compress(pd.DataFrame(rows()).to_csv(index=False).encode()))


def one_50mb_line(path: Path) -> None:
    path.write_bytes(b"lorem ipsum " * (50 * 2**20 // 12))


def truncated_parquet(path: Path) -> None:
    pd.DataFrame(rows()).to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flat_folder(path: Path) -> None:
    path.mkdir()
    for i, r in enumerate(rows(3)):
        (path / f"{i}.txt").write_text(r["text"])


def non_utf8(path: Path) -> None:
    text = pd.DataFrame(rows()).to_csv(index=False).encode()
    path.write_bytes(text + b"caf\xe9 apples orchard,apple\nna\xefve pears juicy,pear\n")


def numbers_as_labels(path: Path) -> None:
    # an int column with a gap: pandas makes it float (1.0, NaN), the labels stay "1", "2", "3"
    frame = pd.DataFrame(rows())
    frame["label"] = frame["label"].map({"apple": 1, "pear": 2, "plum": 3})
    frame.loc[0, "label"] = None
    frame.to_parquet(path)


def nan_labels(path: Path) -> None:
    frame = pd.DataFrame(rows())
    frame.loc[:4, "label"] = float("nan")
    frame.to_parquet(path)


def all_nan_labels(path: Path) -> None:
    pd.DataFrame({"text": ["a b", "c d"], "label": [None, None]}).to_csv(path, index=False)


def class_only_in_test(path: Path) -> None:
    # "kiwi" rows whose texts the split (test_fraction 0.2, seed 0) puts in the test set
    # (the split hashes the cleaned text; these texts are already clean)
    kiwis = [t for t in (f"kiwi kiwis green{i}" for i in range(200))
             if split.test_mask([t], 0.2, 0)[0]][:3]
    pd.DataFrame(rows() + [{"text": t, "label": "kiwi"} for t in kiwis]).to_csv(path, index=False)


@dataclass(frozen=True)
class Case:
    id: str
    file: str  # the name data.path points at
    make: Callable[[Path], None]
    names: tuple[str, ...]  # what the message names besides the file
    todo: str
    data: str = ""  # more data: keys


REFUSED = [
    Case("empty file", "c.csv", empty, ("the file is empty",), "data.on_error: skip"),
    Case("header only", "c.csv", header_only, ("has no documents",),
         "point data.path at files that hold rows"),
    Case("missing text column", "c.csv", csv_of([{"body": "a", "label": "x"}]),
         ("column(s) 'text' not found", "body, label"), "Set data.text_column"),
    Case("missing label column", "c.csv", csv_of([{"text": "a", "topic": "x"}]),
         ("column(s) 'label' not found", "text, topic"), "data.label_column"),
    Case("single class", "c.csv", csv_of([{"text": f"w{i} x", "label": "only"}
                                          for i in range(40)]),
         ("one class only ('only'", "data.label_column"), "add rows of other classes"),
    Case("binary file named .csv", "c.csv", random_bytes, ("not a csv text file", "binary"),
         "give data.path a csv file"),
    Case("gzip file named .csv", "c.csv", gzipped_csv, ("it is a gzip file",),
         "give data.path a csv file"),
    Case("a 50 MB single line", "c.csv", one_50mb_line, ("no line break in the first 1 MB",),
         "one row per line"),
    Case("truncated parquet", "c.parquet", truncated_parquet,
         ("cannot read as parquet (damaged, truncated or not parquet)",),
         "set data.on_error: skip"),
    Case("folder with no label sub-folders", "docs", flat_folder,
         ("no parquet, csv or jsonl files in the folder",), "one sub-folder per label"),
    Case("text-dirs folder with no label sub-folders", "docs", flat_folder,
         ("no label sub-folders",), "put the documents in one sub-folder per label",
         data=", format: text-dirs"),
    Case("NaN labels only", "c.csv", all_nan_labels,
         ("none of its 2 rows has both a text and a label",), "check data.text_column"),
]


class StandIn(LocalStandIn):
    """The local Dask cluster where the CLI expects a Cluster (a context manager)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


@pytest.fixture
def project(client, tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DASKFLEET_CACHE", str(cache))
    (cache / "daskfleet/datasets").mkdir(parents=True)
    monkeypatch.setattr(Cluster, "from_file", classmethod(lambda cls, path: StandIn(client)))
    monkeypatch.setattr(submit, "ship", lambda *a, **k: ShipResult({}, {}, {}))
    monkeypatch.setattr(ship_module, "ship", lambda *a, **k: ShipResult({}, {}, {}))
    # the workers read the shards where the control machine wrote them
    for module in (submit, ship_module):
        monkeypatch.setattr(module, "remote_dir",
                            lambda digest, cluster=None: str(cache / "daskfleet/datasets" / digest))
    (tmp_path / "runs").mkdir()
    (tmp_path / "cluster.yaml").write_text("name: local\nprovider: lab\n")
    return tmp_path


def submit_job(project: Path, case: Case, capsys, model: str = "naive_bayes", extra: str = ""):
    case.make(project / case.file)
    job = project / "job.yaml"
    job.write_text(f"name: {case.id.replace(' ', '-').replace('.', '')}\n"
                   f"data: {{source: files, path: {case.file}{case.data}}}\n"
                   f"model: {{kind: {model}}}\n{extra}")
    return run_cli(["submit", str(job), "-c", str(project / "cluster.yaml"),
                    "--runs-dir", str(project / "runs")], capsys)


def the_run(project: Path) -> Path:
    (run,) = [p for p in (project / "runs").iterdir() if p.is_dir()]
    return run


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_a_bad_corpus_fails_naming_the_file_and_leaves_nothing_half_written(case, project,
                                                                            capsys):
    cache_before = snapshot(project / "cache")
    outcome = submit_job(project, case, capsys)
    assert_clear_error(outcome, 1, (str(project / case.file), *case.names), case.todo)
    run = the_run(project)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and case.names[0] in status["error"]
    assert not (run / "model.joblib").exists() and not (run / "metrics.json").exists()
    assert snapshot(project / "cache") == cache_before  # no dataset published
    assert leftovers(project) == []


def test_a_rare_class_the_hash_puts_in_the_test_split_also_trains_when_stratified(project,
                                                                                capsys):
    outcome = submit_job(project, Case("kiwi", "c.csv", class_only_in_test, (), ""), capsys)
    assert outcome.code == 0, outcome.err
    metrics = json.loads((the_run(project) / "metrics.json").read_text())
    # its 3 rows: round(0.2 x 3) = 1 test row, 2 training rows; a class of the model
    assert metrics["per_class"]["kiwi"]["support"] == 1 and "kiwi" in metrics["model_classes"]
    assert not metrics.get("warnings")


def test_a_class_only_in_the_test_split_is_kept_and_warned_about(project, capsys):
    case = Case("kiwi", "c.csv", class_only_in_test, (), "")
    outcome = submit_job(project, case, capsys, extra="split: {stratify: false}\n")
    assert outcome.code == 0, outcome.err
    warning = ("label(s) 'kiwi' occur only in the test split (3 rows): the model cannot predict "
               "them and their recall is 0; add training rows for them, or change split.seed")
    assert warning in outcome.out
    run = the_run(project)
    assert warning in (run / "logs/run.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert any(warning in w for w in metrics["warnings"]) and "kiwi" in metrics["labels"]
    assert metrics["per_class"]["kiwi"]["recall"] == 0
    # the model's classes are the training split's: it never learnt a class it saw no row of
    assert "kiwi" not in metrics["model_classes"]
    assert "kiwi" not in [str(c) for c in joblib.load(run / "model.joblib")["classifier"].classes_]


def test_non_utf8_bytes_are_replaced_and_warned_about(project, capsys):
    outcome = submit_job(project, Case("latin1", "c.csv", non_utf8, (), ""), capsys)
    assert outcome.code == 0, outcome.err
    warning = (f"{project / 'c.csv'} (data.path): 2 document(s) held bytes that are not UTF-8, "
               "read as U+FFFD; convert the file(s) to UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    assert warning in outcome.out and warning in (the_run(project) / "logs/run.log").read_text()


def test_numbers_as_labels_are_taken_as_their_text(project, capsys):
    outcome = submit_job(project, Case("numbers", "c.parquet", numbers_as_labels, (), ""), capsys)
    assert outcome.code == 0, outcome.err
    metrics = json.loads((the_run(project) / "metrics.json").read_text())
    assert metrics["labels"] == ["1", "2", "3"]  # not "1.0": an int column with a gap
    assert metrics["dropped_rows"] == 1


def test_nan_labels_drop_their_rows_and_are_counted(project, capsys):
    outcome = submit_job(project, Case("nan", "c.parquet", nan_labels, (), ""), capsys)
    assert outcome.code == 0, outcome.err
    assert "5 dropped (no text or label)" in outcome.out
    metrics = json.loads((the_run(project) / "metrics.json").read_text())
    assert metrics["dropped_rows"] == 5 and metrics["labels"] == ["apple", "pear", "plum"]


# --------------------------------------------------------------------------- predict


@pytest.fixture
def trained(project) -> Path:
    """A model.joblib of this daskfleet, as a run writes it (fitted here: no cluster needed)."""
    from sklearn.naive_bayes import MultinomialNB

    from runner.batch.features import resolve_analyzer, vectorize
    from runner.batch.model import model_stamp, save_model
    from runner.batch.text import make_cleaner

    (project / "j.yaml").write_text("name: j\ndata: {source: synthetic, synthetic: {}}\n")
    job = load_job(project / "j.yaml")
    clean = make_cleaner(job.clean_params())
    texts, labels = zip(*((r["text"], r["label"]) for r in rows()), strict=True)
    # analyzer auto, resolved as a run does (these texts are spaced: words)
    params, _, _ = resolve_analyzer(job.vectorizer_params(), unspaced=0, texts=len(texts))
    X = vectorize([clean(t) for t in texts], params)
    model = {**model_stamp(), "vectorizer": params, "clean": job.clean_params(),
             "classifier": MultinomialNB().fit(X, labels), "labels": sorted(WORDS), "idf": None}
    save_model(project / "model.joblib", model)
    return project / "model.joblib"


def predict(project: Path, model: Path, data: Path, capsys, *flags: str):
    return run_cli(["predict", str(model), str(data), "-o", str(project / "out/pred.parquet"),
                    "-c", str(project / "cluster.yaml"), *flags], capsys)


def test_predict_input_without_the_text_column_names_the_flag(project, trained, capsys):
    pd.DataFrame({"body": ["plums"], "label": ["plum"]}).to_csv(project / "new.csv", index=False)
    cache_before = snapshot(project / "cache")
    outcome = predict(project, trained, project / "new.csv", capsys)
    assert_clear_error(outcome, 1, (str(project / "new.csv"), "column(s) 'text' not found",
                                    "body, label"), "daskfleet predict --text-column NAME")
    assert not (project / "out").exists() and leftovers(project) == []
    assert snapshot(project / "cache") == cache_before
    # and with the flag it works
    assert predict(project, trained, project / "new.csv", capsys, "--text-column", "body").code == 0
    assert list(pd.read_parquet(project / "out/pred.parquet")["prediction"]) == ["plum"]


def another_format(model: dict, path: Path) -> None:
    joblib.dump({**model, "format": 99, "daskfleet": "9.9.0"}, path)


def another_sklearn(model: dict, path: Path) -> None:
    import sklearn.base

    # a patch of its own, undone before predict runs (the fixture's patches stay in place)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sklearn.base, "__version__", "1.0.2")  # what the pickle records
        joblib.dump(model, path)


@pytest.mark.parametrize(("rewrite", "names"), [
    (another_format, ("model file from another daskfleet version", "format 99",
                      "written by daskfleet 9.9.0")),
    (another_sklearn, ("model file from another daskfleet environment",
                       "written by scikit-learn 1.0.2")),
], ids=["model of another daskfleet version", "model of another scikit-learn"])
def test_a_model_file_from_another_version_is_refused(project, trained, capsys, rewrite, names):
    old = project / "old-model.joblib"
    rewrite(joblib.load(trained), old)
    pd.DataFrame({"text": ["plums"]}).to_csv(project / "new.csv", index=False)
    outcome = predict(project, old, project / "new.csv", capsys)
    assert_clear_error(outcome, 1, (str(old), *names), "train it again with this daskfleet")
    assert not (project / "out").exists()


def test_a_damaged_model_file_is_refused(project, trained, capsys):
    damaged = project / "damaged.joblib"
    damaged.write_bytes(trained.read_bytes()[:200])
    pd.DataFrame({"text": ["plums"]}).to_csv(project / "new.csv", index=False)
    outcome = predict(project, damaged, project / "new.csv", capsys)
    assert_clear_error(outcome, 1, (str(damaged), "not a daskfleet model file"),
                       "give the model.joblib of a run folder")
