"""`predict` on data where it lives: input objects listed and read by the workers, predictions
written by the workers to an output prefix (here ``file://`` URLs, a filesystem every worker of
the local cluster shares; the lab's object store is tests/e2e/test_10_data_in_place.py)."""

from __future__ import annotations

import json
import random
import textwrap
import time

import pandas as pd
import pytest

from runner.batch import load_job, load_model, predict_texts, prepare_dataset, run_job
from runner.batch.predict_store import MANIFEST
from runner.errors import BatchError
from runner.jobs.predict import predict_in_place

VOCAB = {"sports": "match goal team league referee season striker".split(),
         "cooking": "recipe oven flour sauce simmer garlic butter".split(),
         "music": "guitar chord album melody drummer tempo chorus".split()}


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = list(VOCAB)[i % 3]
        out.append({"text": " ".join(rng.choices(VOCAB[label], k=5)) + f" doc{seed}x{i}",
                    "label": label})
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def model_dir(client, tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    rows(600, 1).to_csv(folder / "train.csv", index=False)
    (folder / "job.yaml").write_text(textwrap.dedent("""\
        name: topics
        data: {source: files, path: train.csv, shard_rows: 200}
        features: {n_features: 4096}
        """))
    job = load_job(folder / "job.yaml")
    dataset = prepare_dataset(job, folder / "cache")
    run_job(client, job, [str(p) for p in dataset.paths], folder / "run", progress=lambda _: None)
    return folder / "run"


def test_workers_read_the_input_objects_and_write_the_parts(client, model_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    objects = [rows(120, 2), rows(80, 3), rows(50, 4).drop(columns="label")]  # one unlabelled
    for i, df in enumerate(objects):
        df.to_csv(inputs / f"docs-{i}.csv", index=False)
    model = load_model(model_dir)
    lines: list[str] = []
    out = f"file://{tmp_path}/out/"
    summary = predict_in_place(client, model, f"file://{inputs}/*.csv", out, lines.append,
                               top_k=2)
    assert summary["rows"] == 250 and summary["accuracy"] > 0.9
    assert any("3 object(s)" in line and "read by the workers" in line for line in lines)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [MANIFEST, "part-00000.parquet", "part-00001.parquet",
                       "part-00002.parquet"], written
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["rows"] == 250 and manifest["parts"] == 3
    for i, df in enumerate(objects):
        part = pd.read_parquet(tmp_path / "out" / f"part-{i:05d}.parquet")
        assert list(part.columns[:4]) == ["source", "row", "label", "prediction"]
        assert set(part["source"]) == {f"file://{inputs}/docs-{i}.csv"}
        assert list(part["row"]) == list(range(len(df)))
        # the same predictions as the model in this process
        assert list(part["prediction"]) == predict_texts(model, list(df["text"]))
        assert part["top_1"].tolist() == part["prediction"].tolist()
    assert pd.read_parquet(tmp_path / "out" / "part-00002.parquet")["label"].isna().all()
    # a second run into the same prefix is refused before any prediction: nothing overwritten
    with pytest.raises(BatchError, match=r"--out .*holds 4 object\(s\) already"):
        predict_in_place(client, model, f"file://{inputs}/*.csv", out, lines.append)
    # and neither run left anything of predict's held on the workers (a listing, a check, a
    # part's counts); the session's cluster may hold other tests' keys
    tasks = ("check_output", "list_inputs", "predict_object", "write_manifest")

    def held() -> list[str]:
        return [k for k in client.who_has() if str(k).startswith(tasks)]

    deadline = time.monotonic() + 10
    while held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not held(), held()


def test_a_url_input_with_a_local_output_numbers_rows_in_listing_order(client, model_dir,
                                                                        tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    objects = [rows(70, 5), rows(40, 6)]
    for i, df in enumerate(objects):
        df.to_parquet(inputs / f"p{i}.parquet", index=False)
    model = load_model(model_dir)
    out = tmp_path / "preds.parquet"
    summary = predict_in_place(client, model, f"file://{inputs}/", str(out), lambda _: None)
    got = pd.read_parquet(out)
    assert summary["rows"] == 110 and list(got["row"]) == list(range(110))
    texts = list(objects[0]["text"]) + list(objects[1]["text"])
    assert list(got["prediction"]) == predict_texts(model, texts)


def test_a_missing_input_names_the_argument(client, model_dir, tmp_path):
    with pytest.raises(BatchError, match=r"predict's input file://.*matches no object"):
        predict_in_place(client, load_model(model_dir), f"file://{tmp_path}/nothing/*.csv",
                         f"file://{tmp_path}/out/", lambda _: None)
