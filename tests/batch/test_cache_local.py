"""features.cache: false (every pass rebuilds its partition from the shard) gives the same model
and metrics as the cached pipeline, on a local multi-process Dask cluster."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from runner.batch import load_job, load_model, prepare_dataset, run_job

distributed = pytest.importorskip("distributed")

# jobs/small.yaml's data: a stable sample of 8,000 Debian packages in 4 shards
SMALL_DATA = "data: {source: debian-packages, limit: 8000, shard_rows: 2000}\n"
SAME = ("n_train", "n_test", "rows", "dropped_rows", "labels", "confusion_matrix", "accuracy",
        "macro_f1", "majority_rate", "per_class", "n_partitions")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets")


def run_with_cache(client, folder: Path, cache_dir: Path, name: str, cache: bool, body: str):
    path = folder / f"{name}-{cache}.yaml"
    features = body.format(cache=str(cache).lower())
    path.write_text(f"name: {name}\n" + SMALL_DATA + textwrap.dedent(features))
    job = load_job(path)
    assert job.features.cache is cache
    dataset = prepare_dataset(job, cache_dir)
    lines: list[str] = []
    run_dir = folder / "runs" / f"{name}-{cache}"
    metrics = run_job(client, job, [str(p) for p in dataset.paths], run_dir,
                      progress=lines.append)
    return metrics, load_model(run_dir), lines


@pytest.mark.usefixtures("apt_lists")
@pytest.mark.parametrize("name, body", [
    ("sgd", "features: {{cache: {cache}, n_features: 65536}}\nmodel: {{kind: sgd, epochs: 2}}\n"),
    ("nb-tfidf", "features: {{cache: {cache}, n_features: 65536, tfidf: true}}\n"
                 "model: {{kind: naive_bayes}}\n"),
], ids=["sgd", "naive_bayes-tfidf"])
def test_uncached_run_equals_cached_run(client, tmp_path, cache_dir, name, body):
    cached, cached_model, _ = run_with_cache(client, tmp_path, cache_dir, name, True, body)
    streamed, streamed_model, lines = run_with_cache(client, tmp_path, cache_dir, name, False,
                                                     body)
    assert any("features.cache: false" in line for line in lines)
    # same rows, same split, same partition order, same seeds: the same numbers, bit for bit
    for key in SAME:
        assert streamed[key] == cached[key], key
    assert cached["n_train"] > 5000 and cached["n_test"] > 1000 and cached["accuracy"] > 0.3
    a, b = cached_model["classifier"], streamed_model["classifier"]
    for attr in ("coef_", "intercept_", "feature_log_prob_", "class_log_prior_"):
        if hasattr(a, attr):
            assert np.array_equal(getattr(a, attr), getattr(b, attr)), attr
    if cached_model["idf"] is not None:
        assert np.array_equal(cached_model["idf"], streamed_model["idf"])
    # nothing of the job stays on the cluster
    assert not client.who_has()


def test_worker_side_rebuild_equals_cached_partition(tmp_path):
    """parts.on_shard rebuilds exactly what read -> clean -> vectorize gives."""
    import pandas as pd

    from runner.batch import parts

    shard = tmp_path / "s.parquet"
    pd.DataFrame({"text": ["Red apples", "green pears", None, "blue sky today", "red sky"],
                  "label": ["a", "b", "a", "b", ""]}).to_parquet(shard)
    params = {"clean": load_job_params()["clean"], "split": {"test_fraction": 0.4, "seed": 1},
              "vectorizer": {"n_features": 64, "ngram_range": [1, 2], "alternate_sign": False,
                             "norm": "l2", "tfidf": False, "cache": False}}
    cached = parts.vectorize_part(parts.clean_part(parts.read_shard(str(shard)), params["clean"],
                                                   params["split"]), params["vectorizer"])
    rebuilt = parts.on_shard(lambda part: part, str(shard), params, None)
    for key in ("X_train", "X_test"):
        assert (cached[key] != rebuilt[key]).nnz == 0
    for key in ("y_train", "y_test", "val_hash"):
        assert list(cached[key]) == list(rebuilt[key])
    stats = parts.shard_stats(str(shard), params["clean"], params["split"])
    assert stats["rows"] == 5 and stats["dropped"] == 2


def load_job_params() -> dict:
    from runner.batch.job import CleanSpec

    return {"clean": CleanSpec().model_dump(mode="python")}


def test_mixing_in_a_tree_is_the_row_weighted_mean_whatever_its_shape():
    from runner.batch import train

    rng = np.random.default_rng(0)
    results = [{"coef": rng.normal(size=(3, 50)).astype(np.float32), "intercept": rng.normal(size=3),
                "t0": 100.0, "t_steps": float(n), "n_rows": n}
               for n in [7, 0, 13, 5]]
    weights = np.array([r["n_rows"] for r in results], dtype=np.float64)
    coefs = np.stack([r["coef"] for r in results]).astype(np.float64)
    expected = np.tensordot(weights / weights.sum(), coefs, axes=1)
    flat = train.mix_finish(2, *results)
    nested = train.mix_finish(2, train.mix_sum(*results[:2]), train.mix_sum(results[2]),
                              results[3])
    for got in (flat, nested):
        assert got["coef"].dtype == np.float32 and got["epochs"] == 3 and got["n_rows"] == 25
        np.testing.assert_allclose(got["coef"], expected, rtol=1e-5, atol=1e-6)
        # the schedule goes on from the epoch's start and the furthest worker's steps (each
        # worker is one process on its share of the rows)
        assert got["t"] == 100.0 + 13
    one = train.mix_finish(0, results[2])  # a single worker: its own weights
    np.testing.assert_allclose(one["coef"], results[2]["coef"], rtol=1e-6)
    assert train.mix_sum(results[1])["n_rows"] == 0


def test_averaged_weights_are_the_row_weighted_mean_of_every_batch_over_epochs(monkeypatch):
    """average (ASGD): the model is the mean of the weights after every batch of every worker
    and epoch, weighted by the batch's rows; the epoch's first group carries the mean so far,
    so it counts once however the mixing tree is shaped."""
    import scipy.sparse as sp

    from runner.batch import parts as parts_mod
    from runner.batch import train

    monkeypatch.setattr(parts_mod, "BATCH_ROWS", 50)  # one batch per partition below
    rng = np.random.default_rng(1)

    def part(n):
        y = rng.integers(0, 3, n)
        X = sp.random(n, 40, density=0.2, format="csr", random_state=int(rng.integers(99)),
                      dtype=np.float32) + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), y)),
                                                        shape=(n, 40))
        return {"X_train": X.tocsr(), "y_train": np.array(["abc"[i] for i in y], dtype=object)}

    groups = [[part(60), part(70)], [part(80)], [part(55)]]
    classes = ["a", "b", "c"]
    params = {"loss": "hinge", "alpha": 1e-4, "random_state": 0, "average": True}
    seen = []  # the weights after every batch, and its rows

    original = train._Average.add

    def record(self, clf, rows):
        seen.append((clf.coef_.astype(np.float64).copy(), rows))
        original(self, clf, rows)

    monkeypatch.setattr(train._Average, "add", record)
    state = None
    for epoch in range(3):
        results = [train.train_partitions(g, state, classes, params, epoch, i)
                   for i, g in enumerate(groups)]
        flat = train.mix_finish(epoch, *results)
        nested = train.mix_finish(epoch, train.mix_sum(*results[:2]), results[2])
        np.testing.assert_allclose(nested["avg_coef"], flat["avg_coef"], rtol=1e-5)
        state = flat
    expected = sum(w * r for w, r in seen) / sum(r for _, r in seen)
    assert state["avg_rows"] == 3 * (60 + 70 + 80 + 55) == sum(r for _, r in seen)
    np.testing.assert_allclose(state["avg_coef"], expected, rtol=1e-4, atol=1e-6)
    # the model kept is the average; training went on from the plain weights
    assert not np.allclose(state["avg_coef"], state["coef"])
    model = train.make_classifier(state, classes, params)
    np.testing.assert_allclose(model.coef_, state["avg_coef"], rtol=1e-6)
    assert train.averaged_rows(state)[0] == state["avg_rows"]
    # average: N starts once the schedule has counted N rows (scikit-learn's t_ - 1)
    later = {**params, "average": 10**9}
    result = train.train_partitions(groups[0], None, classes, later, 0, 0)
    assert "avg_rows" not in train.mix_finish(0, result)
