"""Bring-up that does not scale with the control machine's uplink: on a fresh lab with the uplink
shaped (`lab up --uplink`), a cold `up` of 3 hosts sends about one wheelhouse into the lab (the
first node gets it, the others fetch it from there), and an `up` that finds every node up to
date sends none. The cold `up` is the session's own (conftest's `session_lab`, measured). A job's
local corpus goes out once: each shard to `data.copies` hosts, not the whole corpus to each,
with the features cache or without."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runner.cluster import Cluster
from runner.jobs.ship import held
from runner.lab.uplink import bridge_tx_bytes

LAB_CLUSTER = Path(__file__).resolve().parents[2] / "clusters" / "lab.yaml"
pytestmark = pytest.mark.e2e

FETCH_TASK = "Ensure the archive fetched from the sharing node is the one built for this lock"


def test_a_cold_up_of_three_hosts_sends_one_wheelhouse(lab_cluster, cli, workdir):
    # the session's own cold `up` (tests/e2e/conftest.py) on a fresh lab of 3 hosts, measured
    status = json.loads(cli("lab", "status", "--json").stdout)
    assert status["uplink"]["rate_bits_per_s"] == 200_000_000
    cold = lab_cluster["cold_up"]
    size = cold["wheelhouse"]
    assert "started: scheduler@lab1, lab2-w0@lab2, lab3-w0@lab3" in lab_cluster["up_output"]
    assert cold["sent"] <= 1.3 * size, (f"the control machine sent {cold['sent'] / 1e6:.0f} MB "
                                        f"for a {size / 1e6:.0f} MB wheelhouse to 3 hosts")
    # the other two got it inside the lab, from the first, checked against its digest
    fetched = re.search(rf"TASK \[python_env : {re.escape(FETCH_TASK)}\].*?\n\n",
                        cold["ansible_log"], re.S)
    changed = sorted(re.findall(r"^changed: \[(\w+)\]", fetched[0], re.M)) if fetched else []
    assert changed == ["lab2", "lab3"], changed  # in whichever order they finished

    before = bridge_tx_bytes()
    again = cli("up", "-c", str(LAB_CLUSTER), "--force", timeout=600)
    sent = bridge_tx_bytes() - before
    assert "changed=0" in again.stdout, again.stdout
    assert sent < 0.5 * size, f"an up-to-date cluster was sent {sent / 1e6:.0f} MB again"


# about 100,000 documents in 10 shards (a corpus of a few tens of MB: it dominates what else a
# submit sends into the lab)
SPREAD_JOB = ("name: spread\ndata:\n  source: synthetic\n  synthetic: {n_docs: 100000, "
              "n_classes: 5, vocab_size: 20000, doc_len: 60, noise: 0.05, seed: 11}\n"
              "  shard_rows: 10000\n  copies: COPIES\nfeatures: {n_features: 65536}\n"
              "model: {kind: sgd, epochs: 2}\n")


def _shards_on_worker_hosts(digest: str) -> dict[str, dict[str, int]]:
    """host -> {shard: bytes} of the dataset's folder on each worker host."""
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        return held(cluster.worker_hosts(), cluster.ssh(), "lab", digest)


def test_a_local_corpus_goes_out_once_each_shard_to_its_hosts_only(lab_cluster, cli, workdir):
    job = workdir / "spread.yaml"
    runs = str(workdir / "runs-spread")

    def submit(copies: int, cache: bool = True) -> tuple[str, int]:
        job.write_text(SPREAD_JOB.replace("COPIES", str(copies)).replace(
            "n_features: 65536", f"n_features: 65536, cache: {str(cache).lower()}"))
        before = bridge_tx_bytes()
        out = cli("submit", str(job), "-c", str(LAB_CLUSTER), "--runs-dir", runs,
                  timeout=600).stdout
        return out, bridge_tx_bytes() - before

    one, sent_one = submit(1)
    digest, n_shards = re.search(r"dataset ([0-9a-f]{12}): \d+ documents in (\d+) shards",
                                 one).groups()
    held = _shards_on_worker_hosts(digest)
    shards = {n: b for per_host in held.values() for n, b in per_host.items()}
    corpus = sum(shards.values())
    assert len(shards) == int(n_shards) == 10, held
    assert sum(len(v) for v in held.values()) == len(shards), held  # each shard on one host
    for host, per_host in held.items():  # about corpus / hosts each, plus 20 % at most
        assert sum(per_host.values()) <= 1.2 * corpus / len(held), (host, held)
    # the control machine sent the corpus about once (the whole corpus to each: 2x)
    assert sent_one <= 1.25 * corpus, (f"sent {sent_one / 1e6:.1f} MB for a corpus of "
                                       f"{corpus / 1e6:.1f} MB on {len(held)} hosts", one)

    # without the features cache (every pass rebuilds each partition from its shard), the
    # shards stay one per host: each is rebuilt where it is, and nothing more is sent
    uncached, sent_uncached = submit(1, cache=False)
    assert "features.cache: false" in uncached, uncached
    assert _shards_on_worker_hosts(digest) == held
    assert sent_uncached <= 0.1 * corpus, f"sent {sent_uncached / 1e6:.1f} MB"

    two, sent_two = submit(2)  # each host is sent the shards it lacks, and nothing more
    assert all(set(v) == set(shards) for v in _shards_on_worker_hosts(digest).values())
    assert sent_two <= 1.25 * corpus, f"sent {sent_two / 1e6:.1f} MB"
    # the same corpus, split and model, wherever its shards were read
    accuracy = [re.search(r"accuracy=(\S+)", out)[1] for out in (one, uncached, two)]
    assert accuracy[0] == accuracy[1] == accuracy[2], accuracy
