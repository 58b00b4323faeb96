"""Which worker each partition trains on (``pipeline_tasks.owners``): i mod W when every host
holds every shard; with shards on some hosts only, a worker of a host that holds it, the load
spread over those workers; and the subset of workers that mixing's fewer groups use spans the
hosts (``spread``)."""

from __future__ import annotations

from collections import Counter

import pytest

from runner.batch.pipeline_tasks import owners, spread
from runner.errors import BatchError

A1, A2 = "tls://198.18.0.3:40001", "tls://198.18.0.3:40002"
B1, B2 = "tls://198.18.0.4:40001", "tls://198.18.0.4:40002"
WORKERS = [A1, A2, B1, B2]
A, B = "198.18.0.3", "198.18.0.4"


def test_without_holders_partition_i_goes_to_worker_i_mod_w():
    assert owners(WORKERS, 6) == [A1, A2, B1, B2, A1, A2]


def test_each_partition_goes_to_a_worker_of_a_host_that_holds_it_evenly():
    holders = [[A], [B], [A], [B], [A], [A], [B], [A]]
    got = owners(WORKERS, len(holders), holders)
    assert all(w.split("://")[1].rsplit(":", 1)[0] in h for w, h in zip(got, holders, strict=True))
    # the 5 partitions on A split 3/2 over its two workers, the 3 on B 2/1
    counts = Counter(got)
    assert sorted((counts[A1], counts[A2])) == [2, 3] and sorted((counts[B1], counts[B2])) == [1, 2]


def test_a_partition_held_by_two_hosts_goes_to_the_less_loaded():
    got = owners([A1, B1], 4, [[A], [A], [A, B], [A, B]])
    assert got == [A1, A1, B1, B1]


def test_a_partition_whose_hosts_have_no_worker_goes_to_i_mod_w():
    # its shard is then fetched from where it is, or its strict read fails naming it
    assert owners([A1, B1], 3, [[A], ["198.18.0.9"], [B]]) == [A1, B1, B1]


def test_the_same_workers_and_holders_give_the_same_owners():
    holders = [[A, B], [B], [A, B], [A], [A, B]]
    assert owners(WORKERS, 5, holders) == owners(list(WORKERS), 5, [list(h) for h in holders])


def test_no_worker_is_an_error_that_says_where_to_look():
    with pytest.raises(BatchError, match="no workers"):
        owners([], 3)


def test_spread_puts_one_worker_of_each_host_first():
    assert spread([A2, B2, A1, B1]) == [A1, B1, A2, B2]
    assert spread([A1]) == [A1]
