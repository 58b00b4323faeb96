"""The node's housekeeping script (daskfleet-supervise, which systemd runs) keeps
/var/log/daskfleet bounded: a log over LOG_MAX_MB is copied to .1 (older copies shifted, LOG_KEEP
kept) and emptied in place; and at its start it applies the metadata guard, saying how that
went. The real script, run by bash for one round on a folder of its own. (The Dask processes
are systemd units of their own: tests/unit/test_process_unit.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "playbooks/roles/dask_node/files/daskfleet-supervise"


def _round(tmp_path: Path, guard: str = "/bin/true") -> None:
    env = {**os.environ, "DASKFLEET_LOG_DIR": str(tmp_path / "log"),
           "DASKFLEET_SUPERVISE_CONF": str(tmp_path / "supervise.conf"),
           "DASKFLEET_SUPERVISE_ONCE": "1",
           "DASKFLEET_METADATA_GUARD": guard}  # never this machine's firewall
    out = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def test_a_log_over_the_limit_is_rotated_and_old_copies_are_bounded(tmp_path):
    logs = tmp_path / "log"
    logs.mkdir()
    (tmp_path / "supervise.conf").write_text("LOG_MAX_MB=1\nLOG_KEEP=2\n")
    worker = logs / "lab-lab2-w0.log"
    small = logs / "lab-scheduler.log"
    small.write_text("a few lines\n")
    for generation in range(4):
        worker.write_bytes(f"generation {generation}\n".encode() + b"x" * (1 << 20))
        _round(tmp_path)
        assert worker.stat().st_size == 0  # emptied in place: the process appends on
        assert (logs / "lab-lab2-w0.log.1").read_bytes().startswith(
            f"generation {generation}".encode())
    assert (logs / "lab-lab2-w0.log.2").read_bytes().startswith(b"generation 2")
    assert not (logs / "lab-lab2-w0.log.3").exists()  # LOG_KEEP copies, no more
    assert small.read_text() == "a few lines\n" and not (logs / "lab-scheduler.log.1").exists()
    assert "lab-lab2-w0.log: over 1 MB, rotated" in (logs / "supervisor.log").read_text()


def test_the_metadata_guard_is_applied_at_start_and_a_failure_is_logged(tmp_path):
    guard = tmp_path / "guard"
    for body, said in (("echo applied", "metadata guard: applied"),
                       ("echo no iptables; exit 1", "metadata guard FAILED: no iptables")):
        guard.write_text(f"#!/bin/sh\n{body}\n")
        guard.chmod(0o755)
        _round(tmp_path, str(guard))
        assert (tmp_path / "log" / "supervisor.log").read_text().splitlines()[-1].endswith(said)
