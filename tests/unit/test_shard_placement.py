"""Shards placed on some hosts only, on workers of three hosts (in this process): an ephemeral
run ships its dataset through the scheduler as a long-lived cluster ships it over SSH, each
shard to `data.copies` of the workers' hosts, one archive per host holding that host's shards
only, so the control machine sends about copies x the corpus whatever the number of workers
(what a host holds already is not unpacked again); and `predict` reads each shard of a local
input only on the hosts it was shipped to."""

from __future__ import annotations

import io
import tarfile

import pytest
from distributed import Client, Scheduler, SpecCluster, Worker

from runner.ephemeral import data

RECEIVED: dict[str, list[str]] = {}  # host -> the archive's members (the workers are in-process)


def receive(digest: str, archive: bytes, dask_worker=None) -> list[str]:
    """data._receive's stand-in on the workers: records what each host was sent."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    assert all(n.startswith(f"{digest}/") for n in names)
    RECEIVED[dask_worker.address.split("://")[1].rsplit(":", 1)[0]] = names
    return [n.split("/", 1)[1] for n in names]


@pytest.fixture
def three_hosts():
    """Three workers, each on a host of its own (127.0.0.2-4), in this process."""
    workers = {f"w{i}": {"cls": Worker, "options": {"host": f"127.0.0.{i + 2}", "nthreads": 1}}
               for i in range(3)}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None, "host": "127.0.0.1"}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(3)
        yield client


def test_each_shard_goes_to_copies_hosts_in_one_archive_per_host(three_hosts, tmp_path,
                                                                 monkeypatch):
    files = [f"part-{i:03d}.parquet" for i in range(6)]
    for i, name in enumerate(files):
        (tmp_path / name).write_bytes(bytes([i]) * (1000 + 100 * i))
    received = RECEIVED
    received.clear()
    monkeypatch.setattr(data, "_receive", receive)
    holders, sent = data.ship_through_dask(three_hosts, tmp_path, "d1", files, copies=2)
    assert holders is not None and [len(h) for h in holders] == [2] * 6
    # each host got its own shards, in one archive, and nothing else
    for host, names in received.items():
        assert sorted(n.split("/", 1)[1] for n in names) == sorted(
            f for f, h in zip(files, holders, strict=True) if host in h)
    assert sorted(received) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    total = sum((tmp_path / f).stat().st_size for f in files)
    shipped = sum((tmp_path / f).stat().st_size for names in sent.values() for f in names)
    assert shipped == 2 * total  # copies x the corpus, not hosts x the corpus
    per_host = [sum((tmp_path / f).stat().st_size for f in names) for names in sent.values()]
    assert max(per_host) <= 1.2 * 2 * total / 3  # each host holds about its share
    # no features cache (copies None): every host gets every shard
    received.clear()
    holders, sent = data.ship_through_dask(three_hosts, tmp_path, "d1", files, copies=None)
    assert holders is None and all(sorted(names) == sorted(files) for names in sent.values())


def test_a_host_unpacks_what_it_lacks_where_the_job_reads_it(tmp_path, monkeypatch):
    from runner.jobs.ship import DATA_DIR

    assert data.DATA_DIR == DATA_DIR
    monkeypatch.setattr(data, "DATA_DIR", str(tmp_path / "node"))
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.parquet", "b.parquet"):
        (src / name).write_text(name)
    assert data._receive("d1", data._archive(src, "d1", ["a.parquet"])) == ["a.parquet"]
    # a later archive with both: only what the host lacks is unpacked; nothing is left staged
    assert data._receive("d1", data._archive(src, "d1", ["a.parquet", "b.parquet"])) == \
        ["b.parquet"]
    assert sorted(p.name for p in (tmp_path / "node").iterdir()) == ["d1"]
    assert (tmp_path / "node" / "d1" / "b.parquet").read_text() == "b.parquet"


RAN_ON: dict[str, str] = {}  # shard path -> the host whose worker predicted it


def fake_predict_shard(path: str, model, top_k: int = 0, proba: bool = False):
    """predict_shard's stand-in: one row per shard, and where it ran."""
    import pandas as pd
    from distributed import get_worker

    RAN_ON[path] = get_worker().address.split("://")[1].rsplit(":", 1)[0]
    return pd.DataFrame({"row": [int(path.rsplit("-", 1)[1])], "label": [None],
                         "prediction": ["a"]})


def test_predict_reads_each_shard_only_on_the_hosts_that_hold_it(three_hosts, tmp_path,
                                                                 monkeypatch):
    from types import SimpleNamespace

    import runner.batch.model as batch_model
    from runner.jobs.predict import predict_shards

    monkeypatch.setattr(batch_model, "predict_shard", fake_predict_shard)
    RAN_ON.clear()
    paths = [f"/shards/s-{i}" for i in range(9)]
    holders = [[("127.0.0.2", "127.0.0.3", "127.0.0.4")[i % 3]] for i in range(9)]
    model = {"classifier": SimpleNamespace(classes_=["a", "b"])}
    summary = predict_shards(three_hosts, model, paths, tmp_path / "out.parquet",
                             shard_hosts=holders)
    assert summary["rows"] == 9
    assert RAN_ON == {p: h[0] for p, h in zip(paths, holders, strict=True)}, RAN_ON
