"""Last: `down` with one host crashed reports it and stops the rest; `lab down` leaves nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from runner.cluster import Cluster
from runner.lab import Lab
from runner.ssh import connect, fan_out

LAB_CLUSTER = Path(__file__).resolve().parents[2] / "clusters" / "lab.yaml"
pytestmark = pytest.mark.e2e


def _ps(host, ssh) -> str:
    with connect(host, ssh) as c:
        return c.run("ps -eo args").stdout


def test_down_with_a_host_down_then_lab_down_leave_nothing_behind(lab_cluster, cli):
    lab = Lab()
    lab.kill("lab3")  # a machine crash: every process of lab3, its sshd included, dies
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
        assert not re.search(r"dask (scheduler|worker)", ps), (name, ps)
    cli("lab", "down")
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout.split() if n.startswith("dflab-")]
    assert subprocess.run(["ip", "link", "show", "dflab0"], capture_output=True).returncode != 0
    assert "daskfleet-lab" not in Path("/proc/mounts").read_text()
    sshd = subprocess.run(["pgrep", "-af", "daskfleet-lab"], capture_output=True, text=True).stdout
    assert not sshd.strip(), sshd
    assert not lab.state_dir.exists()
