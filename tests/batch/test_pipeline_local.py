"""The batch end to end on a local multi-process Dask cluster (no network, no lab)."""

from __future__ import annotations

import json
import random
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.batch import load_job, load_model, predict_texts, prepare_dataset, run_job
from runner.dask_workers import joined_workers
from runner.errors import BatchError

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]
METRIC_KEYS = {"accuracy", "macro_f1", "n_train", "n_test", "n_classes", "n_workers",
               "dropped_rows", "timings", "majority_rate", "per_class", "labels", "context"}
PHASES = {"load", "clean", "vectorize", "train", "evaluate", "save"}


def worker_paths(dataset) -> list[str]:
    # on a real cluster these are the same absolute paths on the worker hosts
    return [str(p) for p in dataset.paths]


def write_job(folder: Path, body: str) -> Path:
    path = folder / "job.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.usefixtures("apt_lists")
def test_small_debian_job(client, tmp_path):
    job = load_job(REPO / "jobs" / "small.yaml")
    dataset = prepare_dataset(job, tmp_path / "cache")
    assert dataset.rows == 8000 and dataset.files
    manifest = json.loads((dataset.dir / "manifest.json").read_text())
    assert sum(f["rows"] for f in manifest["files"]) == 8000
    # same input -> same folder, reused without rewriting
    stamps = {f: (dataset.dir / f).stat().st_mtime_ns for f in dataset.files}
    again = prepare_dataset(job, tmp_path / "cache")
    assert again == dataset
    assert stamps == {f: (dataset.dir / f).stat().st_mtime_ns for f in dataset.files}

    lines: list[str] = []
    run_dir = tmp_path / "runs" / "r1"
    metrics = run_job(client, job, worker_paths(dataset), run_dir,
                      context={"cluster": "local"}, progress=lines.append)

    assert METRIC_KEYS <= set(metrics)
    assert set(metrics["timings"]) == PHASES
    assert metrics["context"] == {"cluster": "local"}
    assert metrics["n_workers"] == 2
    assert metrics["n_train"] + metrics["n_test"] + metrics["dropped_rows"] == dataset.rows
    assert metrics["n_classes"] > 20 and len(metrics["labels"]) == metrics["n_classes"]
    assert metrics["accuracy"] > metrics["majority_rate"] + 0.2, metrics
    assert 0 < metrics["macro_f1"] <= 1
    assert any(line.startswith("train: epoch 5/5") for line in lines), lines
    assert json.loads((run_dir / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    assert not run_dir.with_name("r1.tmp").exists()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "succeeded"
    log = (run_dir / "logs" / "run.log").read_text()
    assert "train: epoch 5/5" in log and log.count("\n") == len(lines)
    report = (run_dir / "report.html").read_text()
    assert "<svg" in report and "confusion matrix" in report and "local" in report
    assert "http://" not in report and "https://" not in report and "<script" not in report
    assert (run_dir / "performance.html").stat().st_size > 10_000

    model = load_model(run_dir / "model.joblib")
    # the fixed lists' sections (tests/aptlists.py): words of their own decide
    got = predict_texts(model, [
        "Python 3 bindings for the interpreter",
        "Perl module from CPAN with regex scripts",
        "Ruby gem with rake tasks",
        "HTML documentation and reference manual",
    ])
    assert got == ["python", "perl", "ruby", "doc"]


def labelled_rows(n: int) -> list[dict]:
    vocab = {
        "sports": ["match", "goal", "team", "league", "referee", "season"],
        "cooking": ["recipe", "oven", "flour", "sauce", "simmer", "garlic"],
        "music": ["guitar", "chord", "album", "melody", "drummer", "tempo"],
    }
    rng = random.Random(3)
    rows = []
    for i in range(n):
        label = list(vocab)[i % 3]
        words = rng.choices(vocab[label], k=4) + rng.choices(["the", "a", "new", "great"], k=2)
        rows.append({"body": " ".join(words) + f" #{i}", "topic": label, "extra": i})
    return rows


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_files_source_counts_dropped_rows(client, tmp_path, fmt):
    rows = labelled_rows(600)
    rows += [{"body": "", "topic": "music", "extra": 0},
             {"body": "   ", "topic": "sports", "extra": 0},
             {"body": "a song with no label", "topic": None, "extra": 0},
             {"body": None, "topic": "cooking", "extra": 0}]
    df = pd.DataFrame(rows)
    if fmt == "csv":
        df.to_csv(tmp_path / "data.csv", index=False)
    else:
        df.to_json(tmp_path / "data.jsonl", orient="records", lines=True)
    job = load_job(write_job(tmp_path, f"""\
        name: topics-{fmt}
        data:
          source: files
          path: data.{fmt}
          text_column: body
          label_column: topic
          shard_rows: 150
        model: {{epochs: 3}}
        """))
    dataset = prepare_dataset(job, tmp_path / "cache")
    assert dataset.rows == 604 and len(dataset.files) == 5
    metrics = run_job(client, job, worker_paths(dataset), tmp_path / "run", progress=print)
    assert metrics["dropped_rows"] == 4
    assert metrics["n_train"] + metrics["n_test"] == 600
    assert metrics["labels"] == ["cooking", "music", "sports"]
    assert metrics["accuracy"] > metrics["majority_rate"] + 0.2
    assert "context" not in metrics
    model = load_model(tmp_path / "run")
    assert predict_texts(model, ["garlic sauce in the oven", "a drummer and a guitar"]) == [
        "cooking", "music"]


def test_missing_label_column_is_reported(tmp_path):
    pd.DataFrame({"text": ["a b", "c d"], "category": ["x", "y"]}).to_csv(
        tmp_path / "data.csv", index=False)
    job = load_job(write_job(tmp_path, "name: bad\ndata: {source: files, path: data.csv}\n"))
    with pytest.raises(BatchError, match=r"'label' not found; the file has columns: text, categ"):
        prepare_dataset(job, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def assert_failed_run(run_dir: Path, words: str, status_word: str = "failed") -> None:
    """A failed (or cancelled) run is recorded so and nothing in it looks like a success."""
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == status_word and words in status["error"], status
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.joblib").exists()
    assert not (run_dir / "report.html").exists()
    assert f"{status_word}: " in (run_dir / "logs" / "run.log").read_text()
    assert not run_dir.with_name(run_dir.name + ".tmp").exists()


def test_failing_job_is_recorded_as_failed(client, tmp_path):
    # shards whose label column is missing (e.g. written by another tool): the workers fail
    good = pd.DataFrame({"text": ["x y"] * 10, "label": ["a", "b"] * 5})
    pq.write_table(pa.Table.from_pandas(good), tmp_path / "part-00000.parquet")
    pq.write_table(pa.table({"text": ["x y"] * 10}), tmp_path / "part-00001.parquet")
    job = load_job(write_job(tmp_path, "name: broken\ndata: {source: debian-packages}\n"))
    run_dir = tmp_path / "runs" / "broken"
    with pytest.raises(BatchError, match=r"load failed on shard .*part-00001.parquet"):
        run_job(client, job, [str(tmp_path / f"part-0000{i}.parquet") for i in (0, 1)],
                run_dir, progress=lambda line: None)
    assert_failed_run(run_dir, "part-00001.parquet")
    assert "load: " not in (run_dir / "logs" / "run.log").read_text()


def test_one_class_corpus_is_an_error(client, tmp_path):
    frame = pd.DataFrame({"text": [f"word{i} other{i}" for i in range(50)], "label": ["only"] * 50})
    frame.to_csv(tmp_path / "one.csv", index=False)
    job = load_job(write_job(tmp_path, "name: one\ndata: {source: files, path: one.csv}\n"))
    # the control machine refuses it before any shard is written
    with pytest.raises(BatchError, match=r"one\.csv \(data\.path\): one class only \('only'"):
        prepare_dataset(job, tmp_path / "cache")
    # a second class whose rows all fall in the test split (the plain hash split; stratified,
    # one of its two rows would train): the workers find one class to train
    from runner.batch.split import test_mask

    job = load_job(write_job(tmp_path, "name: one\ndata: {source: files, path: one.csv}\n"
                                       "split: {stratify: false}\n"))

    # (the split hashes the cleaned text; these texts are already clean)
    kiwis = [t for t in (f"kiwi k{i}" for i in range(100)) if test_mask([t], 0.2, 0)[0]][:2]
    pd.concat([frame, pd.DataFrame({"text": kiwis, "label": "kiwi"})]).to_csv(
        tmp_path / "one.csv", index=False)
    dataset = prepare_dataset(job, tmp_path / "cache")
    run_dir = tmp_path / "run"
    with pytest.raises(BatchError, match="one class only"):
        run_job(client, job, worker_paths(dataset), run_dir, progress=lambda line: None)
    assert_failed_run(run_dir, "one class only")
    assert "clean: 52 rows" in (run_dir / "logs" / "run.log").read_text()
    shutil.rmtree(tmp_path / "cache")


def test_a_model_larger_than_the_workers_memory_is_refused_before_any_training(client, tmp_path):
    from runner.batch.train import MEMORY_BUDGET, largest_fitting_features, training_memory
    from runner.errors import ModelTooLarge

    job = load_job(write_job(tmp_path, """\
        name: huge
        data:
          source: synthetic
          synthetic: {n_docs: 2000, n_classes: 100, vocab_size: 500, doc_len: 10, seed: 1}
        features: {n_features: 16777216}
        """))
    limit = min(w["memory_limit"] for w in joined_workers(client).values())
    need = training_memory(100, 2**24)  # 6 float32 copies of 100 x 2**24 weights: 37.5 GiB
    assert need > MEMORY_BUDGET * limit, "this machine's workers would hold it: use more classes"
    fits = largest_fitting_features(100, limit)
    dataset = prepare_dataset(job, tmp_path / "cache")
    lines: list[str] = []
    run_dir = tmp_path / "runs" / "huge"
    with pytest.raises(ModelTooLarge) as e:
        run_job(client, job, worker_paths(dataset), run_dir, progress=lines.append)
    msg = str(e.value)
    assert f"training needs about {need / 2**30:.2f} GiB on every worker" in msg
    assert f"memory limit of {limit / 2**30:.2f} GiB" in msg
    assert f"Lower features.n_features (features.n_features: {fits:,} fits)" in msg
    assert training_memory(100, fits) <= MEMORY_BUDGET * limit < training_memory(100, 2 * fits)
    assert_failed_run(run_dir, "training needs about")
    assert not any(line.startswith(("vectorize:", "train:")) for line in lines), lines


def test_training_memory_counts_copies_rows_and_candidates():
    from runner.batch.train import largest_fitting_features, training_memory

    # 6 float32 copies of the classes x n_features weights
    assert training_memory(20, 2**23) == 6 * 20 * 2**23 * 4
    assert training_memory(2, 1024) == 6 * 1024 * 4  # binary: one row of weights
    assert training_memory(10, 1024, candidates=5) == 6 * 40960 + 4 * 40960  # + 4 more states
    assert largest_fitting_features(10, 10 * 2**20) == 32768  # 7.5 MiB needed <= 8 MiB budget
    assert largest_fitting_features(10**6, 2**20) is None


@pytest.mark.parametrize("exc", [KeyError("label"), KeyboardInterrupt()])
def test_unexpected_failure_is_recorded_and_propagates(client, tmp_path, monkeypatch, exc):
    from runner.batch import pipeline

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(pipeline, "_run", broken)
    job = load_job(write_job(tmp_path, "name: bug\ndata: {source: debian-packages}\n"))
    run_dir = tmp_path / "runs" / "bug"
    with pytest.raises(type(exc)):
        run_job(client, job, ["/nonexistent/part-00000.parquet"], run_dir,
                progress=lambda line: None)
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C on the control machine: cancelled
        assert_failed_run(run_dir, "interrupted on the control machine", "cancelled")
    else:
        assert_failed_run(run_dir, type(exc).__name__)


def test_a_shard_whose_rows_are_all_dropped_does_not_break_the_job(client, tmp_path):
    """Its partition is 0 x n_features (scikit-learn's HashingVectorizer raises StopIteration on
    no texts): it trains and evaluates nothing, and the job goes on with the others."""
    rng = random.Random(0)
    words = {"fruit": ["apple", "pear", "plum", "kiwi"], "sky": ["cloud", "rain", "sun", "wind"]}
    good = pd.DataFrame([{"text": " ".join(rng.choices(words[c], k=6)), "label": c}
                         for c in ("fruit", "sky") for _ in range(200)])
    paths = []
    for i, frame in enumerate([good, pd.DataFrame({"text": ["no label here"] * 30,
                                                   "label": [None] * 30})]):
        path = tmp_path / f"part-{i:05d}.parquet"
        frame.to_parquet(path)
        paths.append(str(path))
    job = load_job(write_job(tmp_path, "name: gaps\ndata: {source: debian-packages}\n"
                                       "model: {kind: sgd, epochs: 3}\n"))
    metrics = run_job(client, job, paths, tmp_path / "run", progress=lambda line: None)
    assert metrics["dropped_rows"] == 30 and metrics["n_partitions"] == 2
    assert metrics["accuracy"] > 0.9


@pytest.mark.parametrize("model", [
    "{kind: naive_bayes, variant: multinomial}",
    "{kind: naive_bayes, variant: complement}",
], ids=["multinomial", "complement"])
def test_a_naive_bayes_model_beyond_the_workers_memory_is_refused_as_float64_counts(
        client, tmp_path, model):
    from runner.batch.memory import largest_fitting, model_memory
    from runner.errors import ModelTooLarge

    job = load_job(write_job(tmp_path, f"""\
        name: huge-nb
        data:
          source: synthetic
          synthetic: {{n_docs: 2000, n_classes: 100, vocab_size: 500, doc_len: 10, seed: 1}}
        features: {{n_features: 16777216}}
        model: {model}
        """))
    limit = min(w["memory_limit"] for w in joined_workers(client).values())
    mem = model_memory("naive_bayes", 100)
    dataset = prepare_dataset(job, tmp_path / "cache")
    lines: list[str] = []
    with pytest.raises(ModelTooLarge) as e:
        run_job(client, job, worker_paths(dataset), tmp_path / "runs" / "huge-nb",
                progress=lines.append)
    msg = str(e.value)
    # 4 float64 copies of 100 x 2**24 counts: 50 GiB, where the SGD check would say 37.5
    assert f"training needs about {mem.need(2**24) / 2**30:.2f} GiB on every worker" in msg, msg
    assert "4 float64 copies of the class-feature counts" in msg, msg
    assert f"features.n_features: {largest_fitting(mem, limit):,} fits" in msg, msg
    assert not any(line.startswith(("vectorize:", "train:")) for line in lines), lines
