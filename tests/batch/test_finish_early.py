"""`daskfleet runs finish`: a running SGD training stops after the epoch that completes when the
flag is set, and the run keeps that epoch's model: evaluated, saved, and its metrics say how
many epochs it trained. A run nobody asks goes to its last epoch."""

from __future__ import annotations

import textwrap
import threading

import numpy as np
import pandas as pd

from runner.batch import finish, load_job, load_model, prepare_dataset, run_job

EPOCHS = 60


def _job(tmp_path):
    rows = [{"text": f"{('match goal team', 'oven flour sauce')[i % 2]} word{i % 7}",
             "label": ("sports", "cooking")[i % 2]} for i in range(400)]
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    (tmp_path / "j.yaml").write_text(textwrap.dedent(f"""\
        name: long
        data: {{source: files, path: c.csv, shard_rows: 100}}
        features: {{n_features: 1024}}
        model: {{epochs: {EPOCHS}}}
        """))
    job = load_job(tmp_path / "j.yaml")
    return job, [str(p) for p in prepare_dataset(job, tmp_path / "cache").paths]


def test_a_run_asked_to_finish_keeps_the_model_of_its_last_epoch(client, tmp_path):
    job, paths = _job(tmp_path)
    lines: list[str] = []
    asked = threading.Event()

    def progress(line: str) -> None:
        lines.append(line)
        if line.startswith("train: epoch 3/") and not asked.is_set():
            asked.set()  # as `daskfleet runs finish RUN` does, from another client
            finish.request(client, "run-1")

    metrics = run_job(client, job, paths, tmp_path / "run", context={"run_id": "run-1"},
                      progress=progress)
    assert asked.is_set()
    trained = metrics["finished_early"]["epochs_trained"]
    assert 3 <= trained < EPOCHS and metrics["epochs"] == trained, metrics.get("finished_early")
    assert metrics["finished_early"]["epochs_asked"] == EPOCHS
    assert any(f"the model of epoch {trained}/{EPOCHS} is kept" in line for line in lines)
    assert not any(line.startswith(f"train: epoch {EPOCHS}/") for line in lines)
    assert metrics["accuracy"] > 0.9  # a model: evaluated and saved as any other
    assert (tmp_path / "run" / "model.joblib").is_file()
    assert not finish.requested(client, "run-1")  # the flag is cleared with the run
    # the model of a run asked for N epochs is the model of its epochs so far: a job of that
    # many epochs trains the same one
    short = job.model_copy(update={"model": job.model.model_copy(update={"epochs": trained})})
    again = run_job(client, short, paths, tmp_path / "short", progress=lambda _: None)
    assert again["confusion_matrix"] == metrics["confusion_matrix"], (again, metrics)
    kept, short_model = (load_model(tmp_path / d)["classifier"] for d in ("run", "short"))
    assert np.array_equal(kept.coef_, short_model.coef_)


def test_a_run_nobody_asks_trains_every_epoch(client, tmp_path):
    job, paths = _job(tmp_path)
    job = job.model_copy(update={"model": job.model.model_copy(update={"epochs": 5})})
    finish.request(client, "another-run")  # another run's flag is not this one's
    metrics = run_job(client, job, paths, tmp_path / "run", context={"run_id": "run-2"},
                      progress=lambda _: None)
    assert metrics["epochs"] == 5 and "finished_early" not in metrics
