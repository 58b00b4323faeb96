"""The corpus is written as shards with a bounded number of files open at once, whatever the
number of shards (the open-file limit, often 1024, would stop a large corpus)."""

from __future__ import annotations

import pyarrow.parquet as pq

from runner.batch import corpus


def test_many_shards_are_written_with_a_bounded_number_of_open_files(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus._ShardWriter, "max_open", 4)
    seen = []
    real_add = corpus._ShardWriter.add

    def add(self, text, label):
        real_add(self, text, label)
        seen.append(self.open_files())

    monkeypatch.setattr(corpus._ShardWriter, "add", add)
    docs = [(f"text {i}", f"c{i % 3}") for i in range(1000)]
    ds = corpus._write_shards(iter(docs), 1000, 100, tmp_path, {"digest": "d"})
    assert len(ds.files) == 10 and max(seen) <= 4
    tables = [pq.read_table(tmp_path / f) for f in ds.files]
    assert sorted(t for tab in tables for t in tab.column("text").to_pylist()) == sorted(
        d[0] for d in docs)  # every row once
    assert [t.num_rows for t in tables] == [100] * 10
    # rows are still dealt round-robin within a window: each shard mixes the classes
    assert all(len(set(t.column("label").to_pylist())) == 3 for t in tables)


def test_few_shards_deal_rows_round_robin_over_all_of_them(tmp_path):
    docs = [(f"text {i}", "a") for i in range(10)]
    ds = corpus._write_shards(iter(docs), 10, 4, tmp_path, {"digest": "d"})
    texts = [pq.read_table(tmp_path / f).column("text").to_pylist() for f in ds.files]
    assert texts == [["text 0", "text 3", "text 6", "text 9"], ["text 1", "text 4", "text 7"],
                     ["text 2", "text 5", "text 8"]]
