"""The corpus is written as shards with a bounded number of files open at once, whatever the
number of shards (the open-file limit, often 1024, would stop a large corpus)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from runner.batch import corpus_shards


def test_many_shards_are_written_with_a_bounded_number_of_open_files(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_shards._ShardWriter, "max_open", 4)
    seen = []
    real_add = corpus_shards._ShardWriter.add

    def add(self, text, label):
        real_add(self, text, label)
        seen.append(self.open_files())

    monkeypatch.setattr(corpus_shards._ShardWriter, "add", add)
    docs = [(f"text {i}", f"c{i % 3}") for i in range(1000)]
    ds = corpus_shards._write_shards(iter(docs), 1000, 100, tmp_path, {"digest": "d"})
    assert len(ds.files) == 10 and max(seen) <= 4
    tables = [pq.read_table(tmp_path / f) for f in ds.files]
    assert sorted(t for tab in tables for t in tab.column("text").to_pylist()) == sorted(
        d[0] for d in docs)  # every row once
    assert [t.num_rows for t in tables] == [100] * 10
    # rows are dealt over all the shards, through the buckets: each shard mixes the classes
    assert all(len(set(t.column("label").to_pylist())) == 3 for t in tables)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*ds.files, "manifest.json"])


def test_few_shards_take_all_rows_in_round_robin_sizes(tmp_path):
    docs = [(f"text {i}", "a") for i in range(10)]
    ds = corpus_shards._write_shards(iter(docs), 10, 4, tmp_path, {"digest": "d"})
    texts = [pq.read_table(tmp_path / f).column("text").to_pylist() for f in ds.files]
    assert [len(t) for t in texts] == [4, 3, 3]
    assert sorted(t for shard in texts for t in shard) == sorted(d[0] for d in docs)


def label_shares(tmp_path, docs, shard_rows, digest="d"):
    ds = corpus_shards._write_shards(iter(docs), len(docs), shard_rows, tmp_path, {"digest": digest})
    shares = []
    for f in ds.files:
        labels = pq.read_table(tmp_path / f).column("label").to_pylist()
        shares.append({c: labels.count(c) / len(labels) for c in set(labels)})
    return shares


@pytest.mark.parametrize(("labels", "n_labels", "docs", "shard_rows", "max_open", "low", "high"), [
    # labels i % 4 over 12 shards: a round-robin deal gave shard s only label s % 4, and a
    # worker holding shards s, s+4, s+8 trained on one class (the mix fell far behind)
    ("period", 4, 6000, 500, 128, 0.15, 0.35),
    ("sorted", 5, 5000, 250, 128, 0.1, 0.3),
    # 40 shards, at most 4 files open: the rows go through 4 buckets of 10 shards; a deal by
    # windows of 4 consecutive shards gave the first shards the first labels only
    ("sorted", 4, 8000, 200, 4, 0.1, 0.4),
], ids=["labels in a period", "sorted by label", "sorted, beyond the open-file limit"])
def test_every_shard_holds_every_label_in_about_its_share(tmp_path, monkeypatch, labels,
                                                          n_labels, docs, shard_rows, max_open,
                                                          low, high):
    monkeypatch.setattr(corpus_shards._ShardWriter, "max_open", max_open)
    label_of = (lambda i: f"c{i % n_labels}") if labels == "period" else \
        (lambda i: f"c{i * n_labels // docs}")
    shares = label_shares(tmp_path, [(f"text {i}", label_of(i)) for i in range(docs)], shard_rows)
    assert len(shares) == docs // shard_rows
    assert all(len(s) == n_labels and low < min(s.values()) and max(s.values()) < high
               for s in shares), shares


def test_the_deal_is_the_same_for_the_same_input_and_differs_with_the_digest(tmp_path):
    docs = [(f"text {i}", "a") for i in range(300)]

    def first_shard(folder, digest):
        folder.mkdir()
        ds = corpus_shards._write_shards(iter(docs), 300, 100, folder, {"digest": digest})
        return pq.read_table(folder / ds.files[0]).column("text").to_pylist()

    assert first_shard(tmp_path / "a", "ab12") == first_shard(tmp_path / "b", "ab12")
    assert first_shard(tmp_path / "c", "ab12") != first_shard(tmp_path / "d", "cd34")
