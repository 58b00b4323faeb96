"""Bring-up that does not scale with the control machine's uplink: on a fresh lab with the uplink
shaped (`lab up --uplink`), a cold `up` of 3 hosts sends about one wheelhouse into the lab (the
first node gets it, the others fetch it from there), and an `up` that finds every node up to
date sends none. The cold `up` is the session's own (conftest's `session_lab`, measured)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runner.lab.machine import bridge_tx_bytes

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
