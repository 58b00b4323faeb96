"""Clusters sharing a host never commit more memory than it has: each cluster's claim (its
share, or its workers' explicit limits), and the node script that records it under a lock or
refuses it, run here by bash against a folder of claims."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import ValidationError

from runner.cluster.hosts import Host
from runner.cluster.memory_claims import COMMIT, RELEASE, Claim, claim
from runner.cluster.process_settings import DaskSettings
from runner.cluster.processes import RemoteProcess
from runner.config import DaskSpec


def test_what_a_cluster_claims_on_a_host():
    assert claim("auto", None, 3) == Claim(fraction=1.0)  # all of it, split between its workers
    assert claim("auto", 0.25, 3) == Claim(fraction=0.25)
    assert claim("0.2", None, 3) == Claim(fraction=pytest.approx(0.6))
    assert claim("2GiB", None, 3) == Claim(bytes=6 * 2**30)
    assert claim("3000000000", None, 1) == Claim(bytes=3_000_000_000)  # > 1: bytes, as dask


def test_workers_split_their_cluster_s_share_of_the_host():
    host = Host(name="w", address="198.18.0.12", role="worker")
    s = DaskSettings(cluster="b", memory_share=0.25)
    assert RemoteProcess(host, "worker", host, s, per_host=2).memory_limit == "0.1187"
    assert RemoteProcess(host, "worker", host, s).memory_limit == "0.2375"
    # without a share, a worker alone on its host keeps dask's own auto (cgroup-aware)
    assert RemoteProcess(host, "worker", host, DaskSettings()).memory_limit == "auto"


def test_a_share_with_an_explicit_limit_is_refused_by_key():
    with pytest.raises(ValidationError, match="dask.memory_share is the share"):
        DaskSpec(memory_limit="4GiB", memory_share=0.5)


def _commit(d, cluster: str, c: Claim, strict: bool = True) -> subprocess.CompletedProcess:
    kind, value = c.text().split()
    return subprocess.run(["bash", "-c", COMMIT, "x", str(d), cluster, kind, value,
                           "1" if strict else "0"], capture_output=True, text=True)


def test_the_node_script_records_claims_and_refuses_an_overcommit(tmp_path):
    d = tmp_path / "memory"
    assert _commit(d, "a", Claim(fraction=0.5)).returncode == 0
    assert (d / "a").read_text() == "fraction 0.500000\n"
    over = _commit(d, "b", Claim(fraction=0.6))
    assert over.returncode == 3 and "claim a 0.500000" in over.stdout, over
    assert not (d / "b").exists()
    # workers already running: recorded nowhere, warned about, not refused
    soft = _commit(d, "b", Claim(fraction=0.6), strict=False)
    assert soft.returncode == 0 and "over" in soft.stdout.split() and not (d / "b").exists()
    # bytes count against the host's MemTotal: a tenth of it fits beside a's half
    total = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo")
                 if line.startswith("MemTotal:"))
    ok = _commit(d, "b", Claim(bytes=total // 10))
    assert ok.returncode == 0 and "mine 0.1" in ok.stdout, ok
    # a cluster's own earlier claim is replaced, not added to
    assert _commit(d, "a", Claim(fraction=0.9)).returncode == 0
    assert _commit(d, "a", Claim(fraction=0.95)).returncode == 3
    subprocess.run(["bash", "-c", RELEASE, "x", str(d), "a"], check=True)
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == ["b"]
