"""Last: a host crashes; `up` refuses, or starts degraded with min_workers; `down` reports the
crashed host and stops the rest; `lab down` leaves nothing behind."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from jobfiles import small_job

from runner.cluster import Cluster
from runner.cluster.ssh import connect, fan_out
from runner.lab import Lab
from runner.lab.addresses import BRIDGE, NETNS_PREFIX, STATE_DIR

LAB_CLUSTER = Path(__file__).resolve().parents[2] / "clusters" / "lab.yaml"
pytestmark = pytest.mark.e2e


def _ps(host, ssh) -> str:
    with connect(host, ssh) as c:
        return c.run("ps -eo args").stdout


def test_a_crashed_host_degraded_up_down_then_lab_down_leave_nothing(lab_cluster, cli, workdir):
    lab = Lab()
    lab.kill("lab3")  # a machine crash: every process of lab3, its sshd included, dies
    # Without min_workers, `up` refuses to run without lab3; with min_workers 1 it starts degraded.
    refused = cli("up", "-c", str(LAB_CLUSTER), check=False, timeout=300)
    assert refused.returncode != 0 and "lab3" in refused.stderr, refused.stderr
    degraded_file = workdir / "lab-min1.yaml"
    degraded_file.write_text(LAB_CLUSTER.read_text() + "min_workers: 1\n")
    degraded = cli("up", "-c", str(degraded_file), timeout=300)
    assert "starting degraded without lab3" in degraded.stdout, degraded.stdout
    status = cli("status", "-c", str(degraded_file), "--json", check=False)
    assert status.returncode == 1  # degraded is not healthy
    # A job on the degraded cluster runs on the live workers (its data shipped only there).
    job = workdir / "degraded-job.yaml"
    job.write_text(small_job("degraded", seed=3, n_docs=2000))
    sub = cli("submit", str(job), "-c", str(degraded_file), "--runs-dir", str(workdir / "runs"),
              timeout=300)
    assert "no live worker on lab3" in sub.stdout and "accuracy=" in sub.stdout, sub.stdout
    assert {w["host"]: w["state"] for w in json.loads(status.stdout)["workers"]} == {
        "lab2": "running", "lab3": "unreachable"}
    proc = cli("down", "-c", str(LAB_CLUSTER), check=False, timeout=120)
    assert proc.returncode != 0
    assert "lab3" in proc.stderr and "The others were stopped" in proc.stderr, proc.stderr
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        alive = [h for h in cluster.hosts() if h.name != "lab3"]
        # ps over SSH sees the host's own PID namespace: every process of that machine
        outputs = {h.name: out for h, out in
                   fan_out(alive, lambda h: _ps(h, cluster.ssh()), "ps").items()}
    for name, ps in outputs.items():
        assert "sshd" in ps
        assert not re.search(r"dask (scheduler|worker)", ps), (name, ps, proc.stdout, proc.stderr)
    cli("lab", "down")
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout.split() if n.startswith(NETNS_PREFIX)]
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0
    assert f"{STATE_DIR}/" not in Path("/proc/mounts").read_text()  # (another lab may run)
    # every process of the lab (sshd, init, controller) runs from files under its state folder
    left = subprocess.run(["pgrep", "-af", str(lab.state_dir)], capture_output=True,
                          text=True).stdout
    assert not left.strip(), left
    assert not lab.state_dir.exists()
