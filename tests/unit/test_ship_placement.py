"""Where the shards of a local corpus go (runner.jobs.ship.placement): each to ``copies``
distinct hosts, every host about its share of the bytes, the same way every time."""

from __future__ import annotations

import pytest
import yaml

from runner.batch.job import JobSpec
from runner.jobs.ship import placement

HOSTS = ["lab2", "lab3", "lab4"]


def per_host(where: dict[str, list[str]], sizes: dict[str, int]) -> dict[str, int]:
    load = dict.fromkeys(HOSTS, 0)
    for name, hosts in where.items():
        for h in hosts:
            load[h] += sizes[name]
    return load


@pytest.mark.parametrize("copies", [1, 2, 3])
def test_each_shard_goes_to_copies_distinct_hosts_and_each_host_gets_its_share(copies):
    # 30 shards of unequal size (the last of a corpus is smaller, text lengths vary)
    sizes = {f"part-{i:05d}.parquet": 1_000_000 + 37_000 * (i % 7) for i in range(29)}
    sizes["part-00029.parquet"] = 200_000
    where = placement(sizes, HOSTS, copies)
    assert list(where) == list(sizes)
    assert all(len(set(h)) == len(h) == copies for h in where.values()), where
    share = copies * sum(sizes.values()) / len(HOSTS)
    assert all(b <= 1.2 * share for b in per_host(where, sizes).values()), per_host(where, sizes)


def test_the_same_corpus_and_hosts_give_the_same_placement():
    sizes = {f"part-{i:05d}.parquet": 500 + i for i in range(12)}
    assert placement(sizes, HOSTS, 1) == placement(dict(reversed(sizes.items())), HOSTS, 1)


def test_more_copies_than_hosts_puts_every_shard_everywhere():
    where = placement({"a": 1, "b": 2}, ["lab2", "lab3"], 5)
    assert {name: sorted(h) for name, h in where.items()} == {"a": ["lab2", "lab3"],
                                                              "b": ["lab2", "lab3"]}


def test_no_host_is_an_error():
    with pytest.raises(ValueError, match="no host"):
        placement({"a": 1}, [], 1)


def job(data: str) -> dict:
    return {"name": "j", "data": yaml.safe_load(data)}


def test_copies_is_checked_and_named():
    spec = JobSpec.model_validate(job("{source: synthetic, synthetic: {n_docs: 100}}"))
    assert spec.data.copies == 2  # a job outlives the loss of one host by default
    with pytest.raises(Exception, match="copies"):
        JobSpec.model_validate(job("{source: synthetic, synthetic: {n_docs: 100}, copies: 0}"))
    with pytest.raises(Exception, match=r"copies.*read in place"):
        JobSpec.model_validate(job("{source: files, path: 's3://b/p/*.parquet', copies: 1}"))


def test_a_ship_result_says_where_each_shard_is_and_what_was_sent():
    from runner.cluster.hosts import Host
    from runner.jobs.ship import ShipResult

    a, b = Host("lab2", "198.18.0.12", "worker"), Host("lab3", "198.18.0.13", "worker")
    r = ShipResult({a: ["p0", "p1"], b: ["p1"]}, {a: ["p0"], b: []},
                   {"p0": 1_000_000, "p1": 2_000_000})
    assert r.hosts_of("p1") == [a, b] and r.hosts_of("p0") == [a] and r.hosts_of("x") == []
    assert r.summary() == ("2 shards (3.0 MB), 1 host(s) each (shards per host: lab2 2, lab3 1); "
                           "sent 1.0 MB to 1 host(s), the rest there already")


def test_the_shipped_holders_name_each_shards_hosts_by_their_dask_address_or_none_for_all():
    from runner.cluster.hosts import Host
    from runner.jobs.ship import ShipResult

    a = Host("a", "203.0.113.1", "worker", private_address="10.0.0.1")
    b = Host("b", "203.0.113.2", "worker", private_address="10.0.0.2")
    sizes = {"s0": 10, "s1": 10}
    one_each = ShipResult({a: ["s0"], b: ["s1"]}, {}, sizes)
    assert one_each.dask_holders() == [["10.0.0.1"], ["10.0.0.2"]]  # private: Dask's address
    assert ShipResult({a: ["s0", "s1"], b: ["s1", "s0"]}, {}, sizes).dask_holders() is None
    assert ShipResult({}, {}, sizes).dask_holders() is None  # no hosts: nothing to restrict
