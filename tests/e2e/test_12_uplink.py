"""Bring-up that does not scale with the control machine's uplink: on a fresh lab with the uplink
shaped (`lab up --uplink`), a cold `up` of 3 hosts sends about one wheelhouse into the lab (the
first node gets it, the others fetch it from there), and an `up` that finds every node up to
date sends none."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import pytest
import yaml

from runner.lab.machine import bridge_tx_bytes
from runner.provision.lock import derive_lock
from runner.provision.wheelhouse import build

pytestmark = pytest.mark.e2e

FETCH_TASK = "Ensure the archive fetched from the sharing node is the one built for this lock"


def test_a_cold_up_of_three_hosts_sends_one_wheelhouse(no_lab, cli, workdir):
    cli("lab", "up", "--hosts", "3", "--uplink", "200mbit", timeout=120)
    cfile = workdir / "fanout.yaml"
    cfile.write_text(yaml.safe_dump({"name": "fanout", "provider": "lab", "lab": {"hosts": 3},
                                     "dask": {"threads_per_worker": 1}}))
    try:
        status = json.loads(cli("lab", "status", "--json").stdout)
        assert status["uplink"]["rate_bits_per_s"] == 200_000_000
        # built (or found) before the count starts: what `up` ships, not what it downloads
        wheelhouse = build(derive_lock(platform.machine()), progress=lambda *_: None)
        size = wheelhouse.archive.stat().st_size

        before = bridge_tx_bytes()
        up = cli("up", "-c", str(cfile), timeout=900)
        sent = bridge_tx_bytes() - before
        assert "started: scheduler@lab1, lab2-w0@lab2, lab3-w0@lab3" in up.stdout, up.stdout
        assert sent <= 1.3 * size, (f"the control machine sent {sent / 1e6:.0f} MB for a "
                                    f"{size / 1e6:.0f} MB wheelhouse to 3 hosts")
        # the other two got it inside the lab, from the first, checked against its digest
        log = (Path(cli.env["DASKFLEET_STATE_DIR"]) / "fanout" / "logs" / "ansible.log").read_text()
        fetched = re.search(rf"TASK \[python_env : {re.escape(FETCH_TASK)}\].*?\n\n", log, re.S)
        changed = sorted(re.findall(r"^changed: \[(\w+)\]", fetched[0], re.M)) if fetched else []
        assert changed == ["lab2", "lab3"], changed  # in whichever order they finished

        before = bridge_tx_bytes()
        again = cli("up", "-c", str(cfile), "--force", timeout=900)
        sent = bridge_tx_bytes() - before
        assert "changed=0" in again.stdout, again.stdout
        assert sent < 0.5 * size, f"an up-to-date cluster was sent {sent / 1e6:.0f} MB again"
    finally:
        cli("down", "-c", str(cfile), "--destroy", check=False, timeout=300)
        cli("lab", "down", check=False, timeout=120)
