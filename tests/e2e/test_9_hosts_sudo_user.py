"""Existing machines whose only login is a non-root user with sudo (`provider: hosts`), after
the shared lab is gone: a fresh lab whose hosts refuse root, and a cluster brought up through it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest
import yaml
from jobfiles import small_job

from runner.cluster import Cluster
from runner.cluster.hosts import Host
from runner.cluster.ssh import connect
from runner.lab import Lab

pytestmark = pytest.mark.e2e


def test_a_hosts_cluster_comes_up_through_a_non_root_sudo_login(no_lab, cli, workdir):
    cli("lab", "up", "--hosts", "2", "--user", "deploy", timeout=120)
    try:
        lab = Lab()
        hosts = lab.hosts()
        assert [h.user for h in hosts] == ["deploy", "deploy"]
        # the hosts' keys as a real machine keeps them: hashed (`HashKnownHosts yes`, Debian's
        # default), which every reader of the file (config check, Terraform, SSH) must take
        known_hosts = workdir / "hashed_known_hosts"
        shutil.copy(lab.known_hosts, known_hosts)
        subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], check=True,
                       capture_output=True)
        assert hosts[0].address not in known_hosts.read_text()
        cfile = workdir / "hosts-deploy.yaml"
        cfile.write_text(yaml.safe_dump({
            "name": "sudohosts", "provider": "hosts",
            "ssh": {"user": "deploy", "private_key": str(lab.key),
                    "known_hosts": str(known_hosts)},
            "hosts": [{"name": "sched", "address": hosts[0].address, "role": "scheduler"},
                      {"name": "w1", "address": hosts[1].address, "role": "worker"}]}))
        up = cli("up", "-c", str(cfile), timeout=600)
        assert "started: scheduler@sched, w1-w0@w1" in up.stdout, up.stdout
        st = json.loads(cli("status", "-c", str(cfile), "--json").stdout)
        assert st["healthy"] and {h["user"] for h in st["hosts"]} == {"deploy"}
        with Cluster.from_file(cfile) as cluster:
            users = cluster.client().run(lambda: __import__("getpass").getuser())
            assert list(users.values()) == ["dask-sudohosts"]
            root = Host("sched", hosts[0].address, "scheduler", "root")
            with pytest.raises(paramiko.AuthenticationException), connect(root, cluster.ssh()):
                pass
            tls_dir = cluster.ca.dir
        assert tls_dir.is_dir()
        cli("down", "-c", str(cfile), "--destroy", "--purge", timeout=300)
        assert not tls_dir.exists()
    finally:
        cli("lab", "down", check=False, timeout=120)


def test_demo_refuses_a_lab_it_did_not_make_and_leaves_nothing_behind(no_lab, cli, workdir):
    lab_file = str(Path(__file__).resolve().parents[2] / "clusters" / "lab.yaml")
    job = workdir / "demo-small.yaml"
    job.write_text(small_job("demo-small", seed=2))
    cli("lab", "up", "--hosts", "2", timeout=120)
    try:
        refused = cli("demo", "-c", lab_file, "--job", str(job), check=False, timeout=120)
        assert refused.returncode != 0 and "a lab is already running" in refused.stderr
        assert [h.name for h in Lab().hosts()] == ["lab1", "lab2"]  # untouched
    finally:
        cli("lab", "down", timeout=120)
    state_dir = Path(cli.env["DASKFLEET_STATE_DIR"]) / "lab"
    inventory = Path(cli.env["DASKFLEET_INVENTORY_DIR"]) / "lab"
    shutil.rmtree(state_dir, ignore_errors=True)  # the shared cluster's, destroyed earlier
    shutil.rmtree(inventory, ignore_errors=True)
    out = cli("demo", "-c", lab_file, "--job", str(job), timeout=600)
    assert "accuracy=" in out.stdout and "run folder:" in out.stdout, out.stdout
    assert not state_dir.exists() and not inventory.exists()
    assert Lab().hosts() == [] and not Lab().state_dir.exists()
    assert list((workdir / "runs").glob("*-demo-small-*/metrics.json"))
