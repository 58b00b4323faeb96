"""Existing machines whose only login is a non-root user with sudo (`provider: hosts`), after
the shared lab is gone: a fresh lab whose hosts refuse root, and a cluster brought up through it."""

from __future__ import annotations

import json

import paramiko
import pytest
import yaml

from runner.cluster import Cluster
from runner.hosts import Host
from runner.lab import Lab
from runner.ssh import connect

pytestmark = pytest.mark.e2e


def test_a_hosts_cluster_comes_up_through_a_non_root_sudo_login(lab_cluster, cli, workdir):
    cli("lab", "down", timeout=120)  # test_8 took the shared lab down; make sure
    cli("lab", "up", "--hosts", "2", "--user", "deploy", timeout=120)
    try:
        lab = Lab()
        hosts = lab.hosts()
        assert [h.user for h in hosts] == ["deploy", "deploy"]
        cfile = workdir / "hosts-deploy.yaml"
        cfile.write_text(yaml.safe_dump({
            "name": "sudohosts", "provider": "hosts",
            "ssh": {"user": "deploy", "private_key": str(lab.key),
                    "known_hosts": str(lab.known_hosts)},
            "hosts": [{"name": "sched", "address": hosts[0].address, "role": "scheduler"},
                      {"name": "w1", "address": hosts[1].address, "role": "worker"}]}))
        up = cli("up", "-c", str(cfile), timeout=900)
        assert "started: scheduler@sched, w1-w0@w1" in up.stdout, up.stdout
        st = json.loads(cli("status", "-c", str(cfile), "--json").stdout)
        assert st["healthy"] and {h["user"] for h in st["hosts"]} == {"deploy"}
        with Cluster.from_file(cfile) as cluster:
            users = cluster.client().run(lambda: __import__("getpass").getuser())
            assert list(users.values()) == ["dask"]
            root = Host("sched", hosts[0].address, "scheduler", "root")
            with pytest.raises(paramiko.AuthenticationException), connect(root, cluster.ssh()):
                pass
        cli("down", "-c", str(cfile), "--destroy", timeout=300)
    finally:
        cli("lab", "down", check=False, timeout=120)
