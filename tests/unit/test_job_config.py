"""Job files: a bad file gives one ConfigError naming the file and the dotted key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from runner.batch.job import JobSpec, load_job
from runner.batch.sources import resolve_files
from runner.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


FIX = "\nFix the file and run the command again."


def error_of(path: Path) -> str:
    """The problems of a refused job file (its footer, the same on every one, aside)."""
    with pytest.raises(ConfigError) as info:
        load_job(path)
    return str(info.value).removesuffix(FIX)


def test_a_refused_job_file_says_what_to_do_as_a_cluster_file_does(tmp_path):
    """One formatter for both (runner/spec_errors.py): a line per problem, then the footer."""
    path = write(tmp_path, "name: j\ndata: {source: debian-packages}\nmodle: {}\nsplit: 3\n")
    with pytest.raises(ConfigError) as info:
        load_job(path)
    lines = str(info.value).splitlines()
    assert lines[-1] == FIX.strip() and len(lines) == 3, lines
    assert all(line.startswith(f"{path}: ") for line in lines[:-1]), lines


@pytest.mark.parametrize("name", ["demo.yaml", "small.yaml"])
def test_shipped_jobs_load(name):
    job = load_job(REPO / "jobs" / name)
    assert isinstance(job, JobSpec)
    assert job.data.source == "debian-packages"


def test_defaults_written_once(tmp_path):
    job = load_job(write(tmp_path, "name: j\ndata: {source: debian-packages}\n"))
    assert job.data.text_column == "text" and job.data.label_column == "label"
    assert job.data.shard_rows is None and job.data.partition_mb == 64 and job.data.limit is None
    assert job.data.on_error == "fail" and job.data.format is None
    assert job.features.n_features == 2**18 and job.features.ngram_range is None
    assert job.features.analyzer == "auto"  # word [1, 2] or char_wb [1, 3], by the texts
    assert job.clean.stop_words == "english" and job.clean.min_token_len == 2
    assert job.split.test_fraction == 0.2 and job.model.kind == "sgd" and job.model.epochs == 5
    # the worker-side functions get plain dicts
    assert isinstance(job.clean_params(), dict) and isinstance(job.sgd_params(), dict)


def test_unknown_key_lists_allowed(tmp_path):
    path = write(tmp_path, "name: j\ndata:\n  sourc: debian-packages\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}: data.sourc: unknown key (allowed: source, path, ")
    assert "text_column" in msg


def test_unknown_top_level_key(tmp_path):
    msg = error_of(write(tmp_path, "name: j\ndata: {source: debian-packages}\nmodle: {}\n"))
    assert "modle: unknown key (allowed: name, data, clean, features, split, model, search, results)" in msg


def test_missing_required(tmp_path):
    path = write(tmp_path, "data: {source: debian-packages}\n")
    assert error_of(path) == (f"{path}: name: required key is missing (letters, digits, '.', "
                              "'_' and '-', e.g. name: my-job)")


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ("model: {epochs: five}", "model.epochs", "valid integer"),
        ("model: {epochs: 0}", "model.epochs", "greater than or equal to 1"),
        ("model: {kind: forest}", "model.kind", "'sgd', 'naive_bayes' or 'incremental'"),
        ("clean: {lowercase: 'yes'}", "clean.lowercase", "valid boolean"),
        ("features: {ngram_range: [2, 1]}", "features.ngram_range", "min_n <= max_n"),
        ("features: {analyzer: chars}", "features.analyzer", "'auto', 'word', 'char' or "
         "'char_wb'"),
        ("results: {path: /local/folder}", "results.path", "use s3://bucket/prefix or "
         "file:///shared/folder"),
        ("results: {path: 's3://'}", "results.path", "use s3://bucket/prefix"),
        ("results: {path: s3://b/p, storage_options: {secrte: x}}",
         "results.storage_options", "unknown key(s) secrte"),
        ("features: {n_features: 3.5}", "features.n_features", "valid integer"),
        ("split: {test_fraction: 1.5}", "split.test_fraction", "less than 1"),
        ("data: {source: debian-packages, limit: -3}", "data.limit", "greater than 0"),
        ("data: {source: web}", "data.source", "'debian-packages', 'files' or 'synthetic'"),
    ],
)
def test_wrong_values_name_the_key(tmp_path, body, key, words):
    if not body.startswith("data:"):
        body = "data: {source: debian-packages}\n" + body
    path = write(tmp_path, f"name: j\n{body}\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}: {key}: "), msg
    assert words in msg


def test_files_path_resolved_against_job_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "c.csv").write_text("text,label\na,b\n")
    job = load_job(write(tmp_path, "name: j\ndata: {source: files, path: data/c.csv}\n"))
    assert job.data.path == (tmp_path / "data" / "c.csv").resolve()
    assert job.data.format is None  # inferred when the data is read
    assert resolve_files(job.data.path, job.data.format) == ("csv", [job.data.path])


def test_files_path_not_found(tmp_path):
    path = write(tmp_path, "name: j\ndata: {source: files, path: nope.csv}\n")
    assert error_of(path) == (
        f"{path}: data.path: file not found: {(tmp_path / 'nope.csv').resolve()} (a relative "
        "data.path is read from the job file's folder; fix the path)"
    )


def test_files_path_required_and_format(tmp_path):
    path = write(tmp_path, "name: j\ndata: {source: files}\n")
    assert error_of(path) == f"{path}: data.path: required when source is 'files' (or give data.url)"
    (tmp_path / "x.txt").write_text("hello")
    path = write(tmp_path, "name: j\ndata: {source: files, path: x.txt}\n")
    assert "data.path: unsupported file type '.txt'" in error_of(path)
    path = write(tmp_path, "name: j\ndata: {source: debian-packages, path: x.txt}\n")
    assert "data.path: " in error_of(path)


def test_missing_and_unparsable_file(tmp_path):
    missing = tmp_path / "absent.yaml"
    assert error_of(missing) == f"{missing}: job file not found"
    bad = write(tmp_path, "name: j\ndata: [unclosed\n")
    msg = error_of(bad)
    assert msg.startswith(f"{bad}: not valid YAML (line ")
    assert error_of(write(tmp_path, "- a\n- b\n")).startswith(f"{tmp_path / 'job.yaml'}: a job")


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ("model: {kind: sgd, variant: complement}", "model.variant",
         "only allowed when kind is 'naive_bayes'"),
        ("model: {kind: naive_bayes, variant: bernoulli}", "model.variant",
         "'multinomial' or 'complement'"),
        ("model: {kind: naive_bayes}\nfeatures: {alternate_sign: true}",
         "features.alternate_sign", "non-negative"),
        ("model: {alpha: 0}", "model.alpha", "greater than 0"),
        ("search: {grid: {}}", "search.grid", "at least one parameter"),
        ("search: {grid: {alpha: []}}", "search.grid.alpha", "at least one value"),
        ("search: {grid: {alpha: [-1]}}", "search.grid.alpha", "numbers > 0"),
        ("search: {grid: {loss: [hinge, bogus]}}", "search.grid.loss", "unknown loss ['bogus']"),
        ("search: {grid: {epochs: [1, 2]}}", "search.grid.epochs", "searchable: alpha, loss"),
        ("model: {kind: naive_bayes}\nsearch: {grid: {loss: [hinge]}}", "search.grid",
         "loss cannot be searched for model.kind 'naive_bayes'"),
        ("model: {kind: incremental}\nsearch: {grid: {alpha: [1.0]}}", "search",
         "not available for model.kind 'incremental'"),
        ("search: {grid: {alpha: [1, 2, 3]}, max_candidates: 2}", "search.grid",
         "3 combinations, more than search.max_candidates (2)"),
        ("search: {grid: {alpha: [1]}, validation_fraction: 1}", "search.validation_fraction",
         "less than 1"),
        ("search: {grids: {alpha: [1]}}", "search.grids", "unknown key (allowed: grid, "),
    ],
)
def test_new_model_and_search_keys_name_the_key(tmp_path, body, key, words):
    path = write(tmp_path, f"name: j\ndata: {{source: debian-packages}}\n{body}\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}: {key}: "), msg
    assert words in msg, msg


def test_model_defaults_per_kind(tmp_path):
    nb = load_job(write(tmp_path, "name: j\ndata: {source: debian-packages}\n"
                                  "model: {kind: naive_bayes}\n"))
    assert nb.model_params()["alpha"] == 1.0 and nb.model_params()["variant"] == "complement"
    sgd = load_job(write(tmp_path, "name: j\ndata: {source: debian-packages}\n"))
    assert sgd.sgd_params()["alpha"] == 1e-5 and sgd.model_params()["variant"] is None
    grid = load_job(write(tmp_path, "name: j\ndata: {source: debian-packages}\n"
                                    "search: {grid: {alpha: [1.0e-5, 1.0e-4], loss: [hinge]}}\n"))
    assert grid.search.candidates() == [{"alpha": 1e-5, "loss": "hinge"},
                                        {"alpha": 1e-4, "loss": "hinge"}]


def test_features_cache_default_and_false(tmp_path):
    job = load_job(write(tmp_path, "name: j\ndata: {source: debian-packages}\n"))
    assert job.features.cache is True and job.vectorizer_params()["cache"] is True
    for kind in ("sgd", "naive_bayes"):
        job = load_job(write(tmp_path, f"""\
            name: j
            data: {{source: debian-packages}}
            features: {{cache: false, tfidf: true}}
            model: {{kind: {kind}}}
            """))
        assert job.features.cache is False and job.vectorizer_params()["cache"] is False


@pytest.mark.parametrize("extra, words", [
    ("model: {kind: incremental}\n", "model.kind incremental"),
    ("search: {grid: {alpha: [1.0e-5, 1.0e-4]}}\n", "search"),
])
def test_features_cache_false_refused_for_incremental_and_search(tmp_path, extra, words):
    message = error_of(write(tmp_path, "name: j\ndata: {source: debian-packages}\n"
                                       "features: {cache: false}\n" + extra))
    assert "features.cache:" in message and words in message and "job.yaml" in message
    # the same job with the cache is fine
    load_job(write(tmp_path, "name: j\ndata: {source: debian-packages}\n"
                             "features: {cache: true}\n" + extra))


@pytest.mark.parametrize(("model", "message"), [
    ("{kind: naive_bayes, eta0: 0.1}", "eta0: only allowed when kind is 'sgd' or 'incremental'"),
    ("{kind: naive_bayes, class_weight: balanced}", "class_weight: only allowed when kind"),
    ("{learning_rate: fastest}", "learning_rate"),
    ("{eta0: 0}", "eta0"),
    ("{class_weight: {rare: -1}}", "class_weight"),
    ("{class_weight: heavy}", "class_weight"),
])
def test_the_schedule_and_class_weights_are_checked(tmp_path, model, message):
    from runner.batch.job import load_job
    from runner.errors import ConfigError

    path = tmp_path / "job.yaml"
    path.write_text(f"name: j\ndata: {{source: debian-packages}}\nmodel: {model}\n")
    with pytest.raises(ConfigError) as e:
        load_job(path)
    assert message in str(e.value) and str(path) in str(e.value), e.value


def test_the_memory_each_model_kind_needs_at_its_peak():
    from runner.batch.memory import largest_fitting, model_memory

    n = 2**21
    sgd = model_memory("sgd", 1000)
    assert sgd.need(n) == 6 * 1000 * n * 4  # 6 float32 copies
    assert model_memory("sgd", 2).rows == 1  # one row of weights for two classes
    assert model_memory("sgd", 10, candidates=5).copies == 10  # + 4 more states
    nb = model_memory("naive_bayes", 1000)
    # the case: 1000 classes x 2**21 features peaks around 67 GB in naive Bayes
    assert nb.need(n) == 4 * 1000 * n * 8 and 66e9 < nb.need(n) < 68e9
    assert model_memory("naive_bayes", 2).rows == 2  # counts keep a row per class
    # a search fits a candidate per worker thread at once; the others wait, fitted, to be scored
    assert model_memory("naive_bayes", 10, candidates=4, threads=2).copies == 4 * 2 + 2 * 2
    assert model_memory("naive_bayes", 10, candidates=4, threads=8).copies == 4 * 4
    fits = largest_fitting(nb, 8 * 2**30)
    assert nb.need(fits) <= 0.8 * 8 * 2**30 < nb.need(2 * fits)
    assert largest_fitting(model_memory("naive_bayes", 10**6), 2**20) is None


def test_average_is_for_parallel_sgd_only_and_costs_memory(tmp_path):
    from runner.batch.memory import model_memory

    def load(model: str):
        return load_job(write(tmp_path, f"name: j\ndata: {{source: debian-packages}}\n{model}"))

    assert load("model: {average: true}\n").sgd_params()["average"] is True
    assert load("model: {average: 50000}\n").model.average == 50000
    assert load("model: {}\n").model.average is False
    assert "model.average" in error_of(write(tmp_path, "name: j\ndata: {source: debian-packages}\n"
                                                 "model: {average: 0}\n"))
    assert "average: only allowed when kind is 'sgd' (incremental" in error_of(write(
        tmp_path, "name: j\ndata: {source: debian-packages}\n"
                  "model: {kind: incremental, average: true}\n"))
    assert "average: only allowed when kind is 'sgd' (naive" in error_of(write(
        tmp_path, "name: j\ndata: {source: debian-packages}\n"
                  "model: {kind: naive_bayes, average: true}\n"))
    # the running average and its sums double the weights held while training
    assert model_memory("sgd", 10, average=True).copies == 12
    assert model_memory("sgd", 10, candidates=3, average=True).copies == 12 + 2 * 2
