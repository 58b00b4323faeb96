"""Data sources on the control machine: files (file, glob, folder, text-dirs), bad files,
the synthetic generator and the partition size."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from runner.batch import load_job, prepare_dataset
from runner.batch.synthetic import generate, vocabulary
from runner.errors import BatchError, ConfigError


def job(folder: Path, data: str, name: str = "j"):
    path = folder / "job.yaml"
    path.write_text(f"name: {name}\ndata:\n" + textwrap.indent(textwrap.dedent(data), "  "))
    return load_job(path)


def rows_of(dataset) -> pd.DataFrame:
    return pd.concat([pq.read_table(p).to_pandas() for p in dataset.paths], ignore_index=True)


def write_csvs(folder: Path, n_files: int = 3, rows: int = 10) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        pd.DataFrame({"text": [f"doc {i} {j}" for j in range(rows)],
                      "label": ["a", "b"] * (rows // 2)}).to_csv(folder / f"p{i}.csv", index=False)


def test_glob_and_folder(tmp_path):
    write_csvs(tmp_path / "data")
    (tmp_path / "data" / "notes.md").write_text("not data")
    by_glob = prepare_dataset(job(tmp_path, "source: files\npath: data/p*.csv\n"), tmp_path / "c")
    by_folder = prepare_dataset(job(tmp_path, "source: files\npath: data\n"), tmp_path / "c")
    assert by_glob.rows == by_folder.rows == 30
    assert sorted(rows_of(by_folder)["text"]) == sorted(f"doc {i} {j}" for i in range(3)
                                                       for j in range(10))


def test_glob_without_match_and_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"data.path: the pattern matches no file: .*nope/\*.csv"):
        job(tmp_path, "source: files\npath: nope/*.csv\n")
    with pytest.raises(ConfigError, match="data.path: file not found"):
        job(tmp_path, "source: files\npath: nope\n")


def test_text_dirs_labels_from_folders_and_bad_bytes_replaced(tmp_path):
    root = tmp_path / "news"
    for label, docs in {"sci.space": ["orbit and rocket", "the moon"],
                        "rec.autos": ["engine oil", "a new car"]}.items():
        (root / label).mkdir(parents=True)
        for i, d in enumerate(docs):
            (root / label / f"{i}").write_text(d)
    (root / "rec.autos" / "latin1").write_bytes(b"caf\xe9 racer \xff")
    ds = prepare_dataset(job(tmp_path, "source: files\npath: news\n"), tmp_path / "c")
    df = rows_of(ds).sort_values("text", ignore_index=True)
    assert ds.rows == 5
    assert dict(zip(df["text"], df["label"], strict=True))["orbit and rocket"] == "sci.space"
    assert "caf\ufffd racer \ufffd" in set(df["text"])  # undecodable bytes replaced
    with pytest.raises(ConfigError, match="data.format: text-dirs takes the label"):
        job(tmp_path, "source: files\npath: news\nformat: text-dirs\nlabel_column: x\n")


def test_corrupt_file_fails_naming_it_or_is_skipped(tmp_path):
    write_csvs(tmp_path / "data", n_files=2)
    (tmp_path / "data" / "p9.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "data" / "p1.csv").write_text('text,label\n"unterminated,a\nx,b\n')
    bad_fail = job(tmp_path, "source: files\npath: data/p*.csv\n")
    with pytest.raises(BatchError, match=r"p1.csv: cannot read as csv"):
        prepare_dataset(bad_fail, tmp_path / "c")
    skip = job(tmp_path, "source: files\npath: data/p*.csv\non_error: skip\n")
    ds = prepare_dataset(skip, tmp_path / "c")
    assert ds.rows == 10 and [Path(p).name for p in ds.skipped] == ["p1.csv"]
    assert prepare_dataset(skip, tmp_path / "c").skipped == ds.skipped  # cached, same answer
    with pytest.raises(BatchError, match=r"p9.parquet: cannot read as parquet"):
        prepare_dataset(job(tmp_path, "source: files\npath: data/p9.parquet\n"), tmp_path / "c")
    only_bad = job(tmp_path, "source: files\npath: data/p9.parquet\non_error: skip\n")
    with pytest.raises(BatchError, match=r"has no documents \(1 unreadable file\(s\) skipped\)"):
        prepare_dataset(only_bad, tmp_path / "c")


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(BatchError, match="has no documents"):
        prepare_dataset(job(tmp_path, "source: files\npath: empty.csv\n"), tmp_path / "c")


def test_synthetic_is_deterministic_and_labelled():
    params = dict(n_docs=500, n_classes=4, vocab_size=300, doc_len=12, noise=0.0, seed=7)
    a, b = list(generate(**params)), list(generate(**params))
    assert a == b and len(a) == 500
    assert list(generate(**{**params, "seed": 8})) != a
    assert {label for _, label in a} == {"class0", "class1", "class2", "class3"}
    assert 8 <= sum(len(t.split()) for t, _ in a) / 500 <= 16
    vocab = set(vocabulary(300))
    assert len(vocab) == 300 and all(w in vocab for t, _ in a for w in t.split())


def test_synthetic_classes_differ_and_noise_flips_labels():
    clean = list(generate(2000, 3, 500, 30, 0.0, 1))
    noisy = list(generate(2000, 3, 500, 30, 0.5, 1))
    # the same documents; about half the labels redrawn, so about a third differ
    assert [t for t, _ in clean] == [t for t, _ in noisy]
    changed = sum(a != b for (_, a), (_, b) in zip(clean, noisy, strict=True)) / 2000
    assert 0.25 < changed < 0.42, changed
    # each class has its own frequent words
    top = {}
    for label in ("class0", "class1"):
        words = pd.Series([w for t, lab in clean if lab == label for w in t.split()])
        top[label] = set(words.value_counts().index[:10])
    assert len(top["class0"] & top["class1"]) < 7


def test_synthetic_source_and_partition_size(tmp_path):
    j = job(tmp_path, """\
        source: synthetic
        synthetic: {n_docs: 3000, n_classes: 3, vocab_size: 400, doc_len: 20}
        partition_mb: 0.1
        """)
    ds = prepare_dataset(j, tmp_path / "c")
    text_mb = rows_of(ds)["text"].str.len().sum() / 2**20
    assert ds.rows == 3000 and len(ds.files) == int(-(-text_mb // 0.1)) >= 3
    rows = job(tmp_path, """\
        source: synthetic
        synthetic: {n_docs: 3000, n_classes: 3, vocab_size: 400, doc_len: 20}
        shard_rows: 1000
        """)
    assert len(prepare_dataset(rows, tmp_path / "c").files) == 3


@pytest.mark.parametrize(("data", "words"), [
    ("source: synthetic\n", "data.synthetic: required when source is 'synthetic'"),
    ("source: files\npath: x.csv\nsynthetic: {n_docs: 5}\n", "data.synthetic: only allowed"),
    ("source: synthetic\nsynthetic: {n_classes: 1}\n", "data.synthetic.n_classes: "),
    ("source: synthetic\nsynthetic: {noise: 2}\n", "data.synthetic.noise: "),
    ("source: synthetic\nsynthetic: {n_doc: 2}\n", "data.synthetic.n_doc: unknown key"),
    ("source: files\npath: x.csv\non_error: ignore\n", "data.on_error: "),
    ("source: files\npath: x.csv\nformat: xml\n", "data.format: "),
    ("source: files\npath: x.csv\nformat: text-dirs\n", "data.format: text-dirs needs"),
    ("source: synthetic\nformat: csv\nsynthetic: {}\n", "data.format: only allowed"),
    ("source: files\npath: x.csv\npartition_mb: 0\n", "data.partition_mb: "),
])
def test_new_data_keys_name_the_key(tmp_path, data, words):
    (tmp_path / "x.csv").write_text("text,label\na,b\n")
    with pytest.raises(ConfigError) as info:
        job(tmp_path, data)
    assert words in str(info.value), str(info.value)


def test_partition_rows_are_capped_without_shard_rows(tmp_path):
    j = job(tmp_path, """\
        source: synthetic
        synthetic: {n_docs: 45000, n_classes: 2, vocab_size: 50, doc_len: 2}
        """)
    ds = prepare_dataset(j, tmp_path / "c")  # ~0.5 MB of text: one partition by size alone
    assert len(ds.files) == 3 and ds.rows == 45000


def test_a_limit_samples_every_label_of_a_corpus_read_label_by_label(tmp_path):
    """text-dirs is read one label folder after another: the first N documents would hold the
    first labels only. A limit takes a stable pseudo-random sample instead."""
    for k in range(20):
        folder = tmp_path / "corpus" / f"label{k:02d}"
        folder.mkdir(parents=True)
        for i in range(50):
            (folder / f"{i}.txt").write_text(f"document {i} of label {k}")
    limited = job(tmp_path, "source: files\npath: corpus\nformat: text-dirs\nlimit: 200\n")
    ds = prepare_dataset(limited, tmp_path / "c")
    df = rows_of(ds)
    assert ds.rows == len(df) == 200
    assert set(df["label"]) == {f"label{k:02d}" for k in range(20)}, df["label"].value_counts()
    assert df["label"].value_counts().min() >= 3  # spread, not 10 labels of 20 documents
    # the same sample every time, and the same as a fresh reading
    again = prepare_dataset(limited, tmp_path / "c2")
    assert sorted(rows_of(again)["text"]) == sorted(df["text"])
