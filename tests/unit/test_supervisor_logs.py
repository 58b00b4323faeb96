"""The node supervisor keeps /var/log/daskfleet bounded: a log over LOG_MAX_MB is copied to .1
(older copies shifted, LOG_KEEP kept) and emptied in place. The real script, run by bash for one
round on a folder of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "playbooks/roles/dask_node/files/daskfleet-supervise"


def _round(tmp_path: Path) -> None:
    env = {**os.environ, "DASKFLEET_SUPERVISE_DIR": str(tmp_path / "supervise"),
           "DASKFLEET_LOG_DIR": str(tmp_path / "log"),
           "DASKFLEET_SUPERVISE_CONF": str(tmp_path / "supervise.conf"),
           "DASKFLEET_SUPERVISE_ONCE": "1",
           "DASKFLEET_METADATA_GUARD": "/bin/true"}  # never this machine's firewall
    out = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def test_a_log_over_the_limit_is_rotated_and_old_copies_are_bounded(tmp_path):
    logs = tmp_path / "log"
    logs.mkdir()
    (tmp_path / "supervise").mkdir()
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


def _starts_of_a_process_that_keeps_dying(tmp_path: Path, conf: str, starts: int) -> list[float]:
    """The real supervisor, looping every 0.1 s, over one process script that says "started"
    each time it runs (its process dies at once): the times of its first ``starts`` starts."""
    import time

    (tmp_path / "supervise").mkdir()
    (tmp_path / "supervise.conf").write_text(conf)
    stamps = tmp_path / "starts"
    (tmp_path / "supervise" / "lab-lab2-w0.sh").write_text(
        "# daskfleet-supervise: 2\n"
        f"date +%s.%N >> {stamps}\necho started pid $$\n")
    env = {**os.environ, "DASKFLEET_SUPERVISE_DIR": str(tmp_path / "supervise"),
           "DASKFLEET_LOG_DIR": str(tmp_path / "log"),
           "DASKFLEET_SUPERVISE_CONF": str(tmp_path / "supervise.conf"),
           "DASKFLEET_SUPERVISE_INTERVAL": "0.1", "DASKFLEET_METADATA_GUARD": "/bin/true",
           "DASKFLEET_RUN_DIR": str(tmp_path / "run")}  # its locks: never this machine's /run
    sup = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    log = tmp_path / "log" / "supervisor.log"
    try:
        deadline = time.monotonic() + 30
        # the start's stamp, then the supervisor's line for it
        while not log.exists() or f"(start {starts} in a row)" not in log.read_text():
            assert sup.poll() is None, sup.stderr.read()
            assert time.monotonic() < deadline, stamps.read_text() if stamps.exists() else ""
            time.sleep(0.05)
    finally:
        sup.kill()
        sup.wait()
    return [float(t) for t in stamps.read_text().split()][:starts]


def test_a_process_that_keeps_dying_is_started_after_2_then_4_s(tmp_path):
    """Not every 0.1 s round: the waits double (the script's clock counts whole seconds, so
    each wait may end up to a second early)."""
    t = _starts_of_a_process_that_keeps_dying(tmp_path, "", 3)
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    assert 1.0 <= gaps[0] <= 2.6 and 3.0 <= gaps[1] <= 4.6, gaps
    log = (tmp_path / "log" / "supervisor.log").read_text()
    assert "lab-lab2-w0: was not running; started pid" in log and "(start 3 in a row)" in log


def test_the_wait_between_starts_stops_growing_at_its_cap(tmp_path):
    t = _starts_of_a_process_that_keeps_dying(tmp_path, "BACKOFF_MAX_S=2\n", 4)
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    assert all(1.0 <= g <= 2.6 for g in gaps), gaps
