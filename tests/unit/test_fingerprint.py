"""What a node was provisioned with: the fingerprint changes with anything the playbook would
install differently, and only then (so a warm `up` skips Ansible exactly when it may)."""

from __future__ import annotations

from types import SimpleNamespace

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


def test_the_probe_prints_the_record_only_when_the_environment_is_in_place():
    script = fingerprint._probe("c1", "aa11")
    assert "/opt/daskfleet/envs/aa11/.daskfleet-complete" in script
    assert "readlink /opt/daskfleet/clusters/c1/current" in script
    assert "/etc/daskfleet/c1/dask/daskfleet.yaml" in script
    assert script.index("cat /var/lib/daskfleet/c1/provisioned") > script.index("readlink")
