"""Model kinds, grid search, artifacts and batch prediction on a local Dask cluster."""

from __future__ import annotations

import io
import json
import random
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from runner.batch import load_job, load_model, predict_texts, prepare_dataset, run_job
from runner.batch.predict_input import prepare_prediction_input
from runner.errors import BatchError
from runner.jobs.predict import predict_shards

VOCAB = {
    "sports": ["match", "goal", "team", "league", "referee", "season", "striker"],
    "cooking": ["recipe", "oven", "flour", "sauce", "simmer", "garlic", "butter"],
    "music": ["guitar", "chord", "album", "melody", "drummer", "tempo", "chorus"],
}
FILLER = ["the", "new", "great", "about", "today", "really"]


def topic_rows(n: int, seed: int = 3) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(VOCAB)[i % 3]
        words = rng.choices(VOCAB[label], k=4) + rng.choices(FILLER, k=3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + f" n{i}", "label": label})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    topic_rows(900).to_csv(folder / "topics.csv", index=False)
    return folder


def job_in(folder: Path, name: str, extra: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        data: {{source: files, path: topics.csv, shard_rows: 200}}
        features: {{n_features: 4096}}
        """) + textwrap.dedent(extra))
    return path


def held_keys_clear(client, seconds: float = 10.0) -> bool:
    """Whether the cluster holds no data any more, within ``seconds``."""
    deadline = time.monotonic() + seconds
    while client.who_has():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run(client, corpus: Path, tmp_path: Path, name: str, extra: str = "") -> tuple[dict, Path]:
    path = job_in(corpus, name, extra)
    job = load_job(path)
    dataset = prepare_dataset(job, tmp_path / "cache")
    run_dir = tmp_path / "runs" / name
    metrics = run_job(client, job, [str(p) for p in dataset.paths], run_dir,
                      context={"run_id": name, "job_path": str(path), "cluster": "local"},
                      progress=lambda line: None)
    return metrics, run_dir


@pytest.mark.parametrize("variant", ["multinomial", "complement"])
def test_naive_bayes(client, corpus, tmp_path, variant):
    metrics, run_dir = run(client, corpus, tmp_path, f"nb-{variant}",
                           f"model: {{kind: naive_bayes, variant: {variant}}}\n")
    assert metrics["model"] == "naive_bayes" and metrics["accuracy"] > 0.9, metrics
    assert metrics["params"]["model"]["alpha"] == 1.0
    model = load_model(run_dir)
    assert type(model["classifier"]).__name__ == {"multinomial": "MultinomialNB",
                                                  "complement": "ComplementNB"}[variant]
    assert predict_texts(model, ["garlic butter sauce", "the drummer and the chorus"]) == [
        "cooking", "music"]
    assert (run_dir / "job.yaml").read_text() == (corpus / f"nb-{variant}.yaml").read_text()


def test_incremental_uses_dask_ml(client, corpus, tmp_path):
    lines: list[str] = []
    path = job_in(corpus, "inc", "model: {kind: incremental, epochs: 2}\n")
    job = load_job(path)
    dataset = prepare_dataset(job, tmp_path / "cache")
    metrics = run_job(client, job, [str(p) for p in dataset.paths], tmp_path / "inc",
                      progress=lines.append)
    assert metrics["model"] == "incremental" and metrics["accuracy"] > 0.9, metrics
    assert any("epoch 2/2" in line and "dask-ml Incremental" in line for line in lines), lines
    assert type(load_model(tmp_path / "inc")["classifier"]).__name__ == "SGDClassifier"


def test_grid_search_records_every_candidate(client, corpus, tmp_path):
    metrics, run_dir = run(client, corpus, tmp_path, "search", """\
        model: {epochs: 2}
        search:
          grid: {alpha: [1.0e-5, 10.0], loss: [hinge, log_loss]}
        """)
    results = metrics["search"]["results"]
    assert len(results) == 4
    assert {json.dumps(r["params"], sort_keys=True) for r in results} == {
        json.dumps({"alpha": a, "loss": lo}, sort_keys=True)
        for a in (1e-5, 10.0) for lo in ("hinge", "log_loss")}
    best = max(results, key=lambda r: r["macro_f1"])
    assert metrics["search"]["best"] == best["params"]
    # alpha 10 regularises everything away: the search must not pick it
    assert best["params"]["alpha"] == 1e-5 and best["macro_f1"] > 0.9
    assert metrics["params"]["model"]["alpha"] == 1e-5
    assert "Grid search" in (run_dir / "report.html").read_text()


def test_metrics_have_per_class_scores_and_confusion(client, corpus, tmp_path):
    metrics, run_dir = run(client, corpus, tmp_path, "sgd", "model: {epochs: 2}\n")
    saved = json.loads((run_dir / "metrics.json").read_text())
    cm = saved["confusion_matrix"]
    assert len(cm) == 3 and sum(map(sum, cm)) == saved["n_test"]
    assert set(saved["per_class"]) == {"cooking", "music", "sports"}
    assert all(set(v) == {"precision", "recall", "f1", "support"}
               for v in saved["per_class"].values())
    assert json.loads((run_dir / "status.json").read_text())["status"] == "succeeded"
    assert saved["context"]["cluster"] == "local" and saved["duration_s"] > 0


def test_predict_shards_one_prediction_per_row_in_order(client, tmp_path, corpus):
    _, run_dir = run(client, corpus, tmp_path, "for-predict", "model: {epochs: 2}\n")
    data = topic_rows(250, seed=11).drop(columns=["label"])
    data.loc[7, "text"] = None  # a row without text still gets a prediction
    data.to_json(tmp_path / "new.jsonl", orient="records", lines=True)
    shards = prepare_prediction_input(tmp_path / "new.jsonl", tmp_path / "pcache", shard_rows=60)
    assert len(shards.files) == 5
    summary = predict_shards(client, load_model(run_dir), [str(p) for p in shards.paths],
                             tmp_path / "out" / "pred.parquet", progress=lambda line: None)
    out = pd.read_parquet(tmp_path / "out" / "pred.parquet")
    assert summary["rows"] == 250 and len(out) == 250 and list(out["row"]) == list(range(250))
    assert "label" not in out.columns
    truth = [list(VOCAB)[i % 3] for i in range(250)]
    agree = sum(p == t for p, t in zip(out["prediction"], truth, strict=True))
    assert agree > 240, agree
    assert not list((tmp_path / "out").glob(".*tmp*"))
    # written a shard at a time (a row group each), never gathered whole on the client
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "out" / "pred.parquet").num_row_groups == 5
    # each shard's predictions released once written, and the model once all are in (the
    # releases reach the scheduler asynchronously: wait for them, under a deadline)
    assert held_keys_clear(client), client.who_has()


def test_predict_input_with_labels_reports_accuracy(client, tmp_path, corpus):
    _, run_dir = run(client, corpus, tmp_path, "for-predict2", "model: {epochs: 2}\n")
    topic_rows(90, seed=5).to_csv(tmp_path / "labelled.csv", index=False)
    shards = prepare_prediction_input(tmp_path / "labelled.csv", tmp_path / "pcache")
    summary = predict_shards(client, load_model(run_dir), [str(p) for p in shards.paths],
                             tmp_path / "p.parquet", progress=lambda line: None)
    assert summary["accuracy"] > 0.9
    assert list(pd.read_parquet(tmp_path / "p.parquet").columns) == ["row", "label", "prediction"]
    with pytest.raises(BatchError, match="data file not found"):
        prepare_prediction_input(tmp_path / "absent.csv", tmp_path / "pcache")


def test_synthetic_corpus_with_skipped_files_in_metrics(client, tmp_path):
    path = tmp_path / "syn.yaml"
    path.write_text(textwrap.dedent("""\
        name: syn
        data:
          source: synthetic
          synthetic: {n_docs: 4000, n_classes: 4, vocab_size: 2000, doc_len: 30, noise: 0.1}
          partition_mb: 0.1
        features: {n_features: 8192, ngram_range: [1, 1]}
        model: {kind: naive_bayes}
        """))
    job = load_job(path)
    dataset = prepare_dataset(job, tmp_path / "cache")
    assert len(dataset.files) >= 4
    metrics = run_job(client, job, [str(p) for p in dataset.paths], tmp_path / "run",
                      context={"skipped_files": ["/data/bad.csv"]}, progress=lambda line: None)
    assert metrics["skipped_files"] == 1 and metrics["n_classes"] == 4
    # 10% of the labels are redrawn at random (a quarter of them to the same class): the
    # best possible accuracy is about 0.925
    assert 0.8 < metrics["accuracy"] < 0.95, metrics["accuracy"]


def test_tfidf_job_and_its_model_agree(client, corpus, tmp_path):
    path = corpus / "tfidf.yaml"
    path.write_text(textwrap.dedent("""\
        name: tfidf
        data: {source: files, path: topics.csv, shard_rows: 200}
        clean: {strip_numbers: true, strip_html: true}
        features: {n_features: 4096, tfidf: true, ngram_range: [1, 1]}
        model: {epochs: 2}
        """))
    job = load_job(path)
    dataset = prepare_dataset(job, tmp_path / "cache")
    metrics = run_job(client, job, [str(p) for p in dataset.paths], tmp_path / "run",
                      progress=lambda line: None)
    assert metrics["accuracy"] > 0.9 and metrics["params"]["features"]["tfidf"] is True
    model = load_model(tmp_path / "run")
    idf = model["idf"]
    assert idf.shape == (4096,) and idf.min() >= 1.0 and idf.max() > idf.min()
    assert predict_texts(model, ["<b>garlic</b> butter 42 sauce"]) == ["cooking"]


COUNTED: list[int] = []  # n_docs of each document-frequency task (module level: pickled by name)


def counting_train_frequencies(part):
    from runner.batch.features import document_frequencies

    freq = document_frequencies(part["X_train"])
    COUNTED.append(freq["n_docs"])
    return freq


def test_the_search_idf_comes_from_its_fitting_rows_only(corpus, tmp_path, monkeypatch):
    # an in-process cluster, so the document-frequency tasks can be watched from here
    from distributed import Client, LocalCluster

    from runner.batch import parts

    COUNTED.clear()
    counted = COUNTED
    monkeypatch.setattr(parts, "train_frequencies", counting_train_frequencies)
    with LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as local:
        metrics, _ = run(local, corpus, tmp_path, "tfidf-search", """\
            features: {n_features: 4096, tfidf: true}
            model: {epochs: 2}
            search: {grid: {alpha: [1.0e-5, 1.0e-3]}, validation_fraction: 0.25}
            """)
    n_parts = metrics["n_partitions"]
    assert len(counted) == 2 * n_parts  # the search's idf, then the final one
    search_docs, final_docs = sum(counted[:n_parts]), sum(counted[n_parts:])
    assert final_docs == metrics["n_train"]
    # the validation rows (a quarter of the training rows, by text hash) are not counted
    assert 0.65 * metrics["n_train"] < search_docs < 0.85 * metrics["n_train"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_only_in_a_terminal(client, corpus, tmp_path, monkeypatch, tty):
    err = FakeTerminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    lines: list[str] = []
    path = job_in(corpus, f"bar-{tty}", "model: {epochs: 1}\n")
    job = load_job(path)
    dataset = prepare_dataset(job, tmp_path / "cache")
    run_job(client, job, [str(p) for p in dataset.paths], tmp_path / "run", progress=lines.append)
    assert any(line.startswith("train: epoch 1/1") for line in lines)
    if tty:
        assert "% Completed" in err.getvalue()
    else:
        assert err.getvalue() == ""


def test_stemming_runs_on_the_workers(client, corpus, tmp_path):
    # the workers import snowballstemmer: it must be part of the shipped environment
    metrics, run_dir = run(client, corpus, tmp_path, "stem", "clean: {stem: english}\n"
                                                             "model: {epochs: 2}\n")
    assert metrics["params"]["clean"]["stem"] == "english" and metrics["accuracy"] > 0.9
    assert predict_texts(load_model(run_dir), ["drummers playing melodies"]) == ["music"]


def test_naive_bayes_search_over_alpha(client, corpus, tmp_path):
    metrics, _ = run(client, corpus, tmp_path, "nb-search", """\
        model: {kind: naive_bayes, variant: multinomial}
        search: {grid: {alpha: [0.01, 1000.0]}}
        """)
    by_alpha = {r["params"]["alpha"]: r["macro_f1"] for r in metrics["search"]["results"]}
    assert set(by_alpha) == {0.01, 1000.0} and by_alpha[0.01] > by_alpha[1000.0]
    assert metrics["search"]["best"] == {"alpha": 0.01}
    assert metrics["params"]["model"]["alpha"] == 0.01 and metrics["accuracy"] > 0.9


def imbalanced_rows(seed: int = 5) -> pd.DataFrame:
    """Two common classes and a rare one (3 % of rows) whose documents carry only one word of
    its own among the common classes' words: unweighted, SGD seldom predicts it."""
    rng = random.Random(seed)
    rows = []
    for i in range(1600):
        label = "rare" if i % 33 == 0 else ("sports", "cooking")[i % 2]
        if label == "rare":
            words = rng.choices(VOCAB["music"], k=1) + rng.choices(
                VOCAB["sports"] + VOCAB["cooking"], k=5)
        else:
            words = rng.choices(VOCAB[label], k=3) + rng.choices(VOCAB["music"], k=1) + \
                rng.choices(FILLER, k=2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + f" n{i}", "label": label})
    return pd.DataFrame(rows)


def test_balanced_class_weights_lift_the_rare_class(client, tmp_path):
    imbalanced_rows().to_csv(tmp_path / "topics.csv", index=False)
    plain, _ = run(client, tmp_path, tmp_path, "unweighted", "model: {epochs: 5}\n")
    weighted, run_dir = run(client, tmp_path, tmp_path, "balanced",
                            "model: {epochs: 5, class_weight: balanced}\n")
    rare = {m["job"]: m["per_class"]["rare"]["recall"] for m in (plain, weighted)}
    assert rare["balanced"] >= rare["unweighted"] + 0.1, rare
    # the weights the run used, from the training split's counts, as scikit-learn computes them
    used = weighted["params"]["model"]["class_weight"]
    assert used["rare"] > 10 * used["sports"] and abs(used["sports"] - used["cooking"]) < 0.1
    assert load_model(run_dir)["classifier"].class_weight == used


def rare_class_rows(n: int = 4000) -> pd.DataFrame:
    """The three topics, and three rare classes of 11, 15 and 19 rows (0.3-0.5 % of rows)."""
    frame = topic_rows(n)
    rare = pd.DataFrame([{"text": f"{name} {name}ish special{i}", "label": name}
                         for name, k in (("jazz", 11), ("opera", 15), ("salsa", 19))
                         for i in range(k)])
    return pd.concat([frame, rare]).sample(frac=1.0, random_state=1)


@pytest.mark.parametrize("cache", [True, False])
def test_every_rare_class_gets_its_share_of_test_rows_and_trains(client, tmp_path, cache):
    rare_class_rows().to_csv(tmp_path / "topics.csv", index=False)
    metrics, _ = run(client, tmp_path, tmp_path, f"rare-{cache}",
                     f"features: {{n_features: 4096, cache: {str(cache).lower()}}}\n")
    for name, k in (("jazz", 11), ("opera", 15), ("salsa", 19)):
        assert metrics["per_class"][name]["support"] == round(0.2 * k), name
        assert name in metrics["model_classes"]
    assert metrics["params"]["split"]["stratify"] is True


def test_class_weight_naming_no_training_label_is_refused(client, corpus, tmp_path):
    with pytest.raises(BatchError, match=r"model\.class_weight names label\(s\) 'jazz'"):
        run(client, corpus, tmp_path, "cw-unknown", "model: {class_weight: {jazz: 3.0}}\n")


def test_the_learning_rate_schedule_is_scikit_learns(client, corpus, tmp_path):
    metrics, run_dir = run(client, corpus, tmp_path, "constant-rate",
                           "model: {epochs: 3, learning_rate: constant, eta0: 0.05}\n")
    clf = load_model(run_dir)["classifier"]
    assert (clf.learning_rate, clf.eta0) == ("constant", 0.05) and metrics["accuracy"] > 0.9


@pytest.mark.parametrize(("loss", "kind"), [("log_loss", "probability"), ("hinge", "decision")])
def test_predict_writes_the_best_classes_and_every_score(client, tmp_path, corpus, loss, kind):
    from runner.errors import ConfigError

    _, run_dir = run(client, corpus, tmp_path, f"scores-{loss}",
                     f"model: {{epochs: 2, loss: {loss}}}\n")
    model = load_model(run_dir)
    topic_rows(90, seed=12).drop(columns=["label"]).to_csv(tmp_path / "new.csv", index=False)
    shards = prepare_prediction_input(tmp_path / "new.csv", tmp_path / "pcache", shard_rows=40)
    out = tmp_path / "out.parquet"
    summary = predict_shards(client, model, [str(p) for p in shards.paths], out,
                             progress=lambda line: None, top_k=2, proba=True)
    df = pd.read_parquet(out)
    assert summary["scores"] == kind and len(df) == 90
    assert list(df.columns) == ["row", "prediction", "top_1", "score_1", "top_2", "score_2",
                                "score:cooking", "score:music", "score:sports"]
    assert (df["top_1"] == df["prediction"]).all() and (df["top_1"] != df["top_2"]).all()
    assert (df["score_1"] >= df["score_2"]).all()
    per_class = df[["score:cooking", "score:music", "score:sports"]].to_numpy()
    assert (per_class.max(axis=1) == df["score_1"].to_numpy()).all()
    if kind == "probability":
        assert abs(per_class.sum(axis=1) - 1).max() < 1e-6
    with pytest.raises(ConfigError, match="--top-k 4: the model has 3 classes"):
        predict_shards(client, model, [str(p) for p in shards.paths], out, top_k=4)
