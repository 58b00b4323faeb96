"""average (ASGD) in the parallel SGD: the averaged model of the workers holds scikit-learn's own
SGDClassifier(average=True) on one process, same features and split."""

from __future__ import annotations

import textwrap

import pandas as pd

from runner.batch import load_job, load_model, prepare_dataset, run_job
from runner.batch.reference import single_process_features, single_process_fit
from runner.batch.synthetic import generate


def test_averaged_sgd_on_the_workers_holds_scikit_learns_own(client, tmp_path):
    # 30,000 documents, 6 classes, 10 % label noise: 24,000 training rows, two models mixed
    docs = pd.DataFrame(list(generate(30_000, 6, 3000, 25, 0.1, 5)), columns=["text", "label"])
    docs.to_csv(tmp_path / "docs.csv", index=False)
    lines: list[str] = []
    runs = {}
    for name, model in (("asgd", "{average: true}"), ("asgd-late", "{average: 1000000000}")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(f"""\
            name: {name}
            data: {{source: files, path: docs.csv, shard_rows: 3000}}
            features: {{n_features: 65536}}
            model: {model}
            """))
        job = load_job(path)
        dataset = prepare_dataset(job, tmp_path / "cache")
        runs[name] = (job, dataset, run_job(client, job, [str(p) for p in dataset.paths],
                                            tmp_path / "runs" / name, progress=lines.append))
    job, dataset, metrics = runs["asgd"]
    assert metrics["mixed_models"] == 2
    # every batch of every worker and epoch is in the average
    assert metrics["averaged_rows"] == job.model.epochs * metrics["n_train"]
    assert any("averaged SGD: the model is the mean of the weights" in line for line in lines)
    single = single_process_fit(job, single_process_features(job, dataset.paths), "sgd")
    print(f"averaged SGD: 2 workers {metrics['accuracy']:.4f} / {metrics['macro_f1']:.4f}, "
          f"one process {single['accuracy']:.4f} / {single['macro_f1']:.4f}")
    assert metrics["accuracy"] >= single["accuracy"] - 0.01, (metrics["accuracy"], single)
    assert metrics["macro_f1"] >= single["macro_f1"] - 0.02, (metrics["macro_f1"], single)
    # the saved model has the averaged weights, not the last mixed ones
    late_job, _, late = runs["asgd-late"]
    assert late["averaged_rows"] == 0
    assert any("nothing was averaged, the model has the plain weights" in line for line in lines)
    averaged = load_model(tmp_path / "runs" / "asgd")["classifier"].coef_
    plain = load_model(tmp_path / "runs" / "asgd-late")["classifier"].coef_
    assert abs(averaged - plain).max() > 1e-3
