"""What a node was provisioned with: the fingerprint changes with anything the playbook would
install differently, and only then (so a warm `up` skips Ansible exactly when it may)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner.cluster.hosts import Host
from runner.provision import fingerprint
from runner.provision.tls import CertificateAuthority


def _cluster(tmp_path, tls=True):
    ca = CertificateAuthority(tmp_path / "tls", "c1")
    ca.ensure({"w1": "10.0.0.3", "w2": "10.0.0.4"})
    return SimpleNamespace(spec=SimpleNamespace(name="c1", tls=tls), ca=ca)


def test_the_fingerprint_follows_what_the_playbook_would_install(tmp_path):
    cluster = _cluster(tmp_path)
    w1, w2 = Host("w1", "10.0.0.3", "worker"), Host("w2", "10.0.0.4", "worker")
    variables = {"python_env_targets": {"x86_64": {"hash": "aa11", "archive": "/a.tar"}},
                 "dask_node_tls": True}
    base = fingerprint.expected(cluster, w1, variables)
    assert fingerprint.expected(cluster, w1, dict(variables)) == base  # stable
    assert fingerprint.expected(cluster, w2, variables) != base  # its own certificate
    other_env = {**variables, "python_env_targets": {"x86_64": {"hash": "bb22",
                                                                "archive": "/b.tar"}}}
    assert fingerprint.expected(cluster, w1, other_env) != base
    assert fingerprint.expected(cluster, Host("w1", "10.0.0.3", "worker", user="admin"),
                                variables) != base  # another login (become)
    cluster.ca.ensure({"w1": "10.0.0.9"})  # a new address: a new certificate to install
    assert fingerprint.expected(cluster, w1, variables) != base


def _node(root: Path, cluster: str = "c1", env_hash: str = "aa11") -> dict[str, Path]:
    """A node's provisioned files under ``root`` (which stands for /)."""
    env = root / f"opt/daskfleet/envs/{env_hash}"
    files = {"complete": env / ".daskfleet-complete",
             "config": root / f"etc/daskfleet/{cluster}/dask/daskfleet.yaml",
             "record": root / f"var/lib/daskfleet/{cluster}/provisioned",
             "link": root / f"opt/daskfleet/clusters/{cluster}/current"}
    for key in ("complete", "config", "record"):
        files[key].parent.mkdir(parents=True, exist_ok=True)
        files[key].write_text("fp-123\n" if key == "record" else "")
    files["link"].parent.mkdir(parents=True, exist_ok=True)
    # the link names the environment as the node sees it (from /), as the playbook makes it
    files["link"].symlink_to(f"/opt/daskfleet/envs/{env_hash}")
    return files


def _run_probe(root: Path, cluster: str = "c1", env_hash: str = "aa11") -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", fingerprint._probe(cluster, env_hash, root=str(root))],
                          capture_output=True, text=True, timeout=10)


def test_the_probe_prints_the_record_when_everything_is_in_place(tmp_path):
    _node(tmp_path)
    out = _run_probe(tmp_path)
    assert out.returncode == 0 and out.stdout == "fp-123\n", out


@pytest.mark.parametrize("broken", ["complete", "config", "record", "link"])
def test_the_probe_prints_nothing_when_a_part_is_missing(tmp_path, broken):
    files = _node(tmp_path)
    files[broken].unlink()
    if broken == "link":  # the link pointing at another environment is as good as missing
        files["link"].symlink_to("/opt/daskfleet/envs/bb22")
    out = _run_probe(tmp_path)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "", out


def test_the_probe_asks_for_this_environment_and_cluster(tmp_path):
    _node(tmp_path)
    assert _run_probe(tmp_path, env_hash="bb22").stdout == ""  # another environment wanted
    assert _run_probe(tmp_path, cluster="c2").stdout == ""  # another cluster's files
    odd = tmp_path / "it's a $(root)"  # quotes and $() in a path stay one word, run nothing
    _node(odd)
    quoted = _run_probe(odd)
    assert quoted.returncode == 0 and quoted.stdout == "fp-123\n", quoted


def test_a_record_that_differs_only_in_its_tls_files_needs_only_those(tmp_path):
    cluster = _cluster(tmp_path)
    w1 = Host("w1", "10.0.0.3", "worker")
    variables = {"python_env_targets": {"x86_64": {"hash": "aa11", "archive": "/a.tar"}},
                 "dask_node_tls": True}
    before = fingerprint.expected(cluster, w1, variables)
    assert fingerprint.difference(before, before) is None
    cluster.ca.rotate({"w1": "10.0.0.3", "w2": "10.0.0.4"})  # new leaf certificates
    rotated = fingerprint.expected(cluster, w1, variables)
    assert fingerprint.difference(before, rotated) == "tls"
    other_env = {**variables, "python_env_targets": {"x86_64": {"hash": "bb22",
                                                                "archive": "/b.tar"}}}
    # anything else, with or without new certificates, needs the whole playbook
    assert fingerprint.difference(before, fingerprint.expected(cluster, w1, other_env)) == "all"
    for found in (None, "", before.split(":")[0], "garbage"):  # none, unreadable, old format
        assert fingerprint.difference(found, rotated) == "all", found
