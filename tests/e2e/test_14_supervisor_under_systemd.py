"""The supervisor's unit, as real hosts get it, run by systemd 252 itself: a container of this
machine (systemd-nspawn, its root this machine's, read-only under a tmpfs overlay, so nothing it
writes reaches this machine) boots systemd as its PID 1 with the unit enabled. systemd starts the
supervisor at boot, which starts the node's processes; a supervisor killed comes back; and a
restart or stop of the supervisor leaves the processes it started running (KillMode=process: a
playbook run that installs a new supervisor must not end a running job).

The lab's hosts boot systemd too, and every e2e test runs the unit there; what this test adds
is a look from outside at the unit's own behaviour (systemctl restart and stop of it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from polling import poll

pytestmark = pytest.mark.e2e

FILES = Path(__file__).resolve().parents[2] / "playbooks/roles/dask_node/files"
UNIT = "daskfleet-supervise.service"
# A node process of the supervisor's folder: started (in a session of its own) unless it runs.
# Each round's answer is also appended to /run/probe.calls: what each supervisor round found.
PROCESS = ("# daskfleet-supervise: 2\n"
           "if [ -f /run/probe.pid ] && kill -0 \"$(cat /run/probe.pid)\" 2>/dev/null; then\n"
           "  echo \"running $(cat /run/probe.pid)\" | tee -a /run/probe.calls; exit 0\nfi\n"
           "setsid sleep 900 > /dev/null 2>&1 < /dev/null & echo $! > /run/probe.pid\n"
           "echo \"started $!\" | tee -a /run/probe.calls\n")


def _poll(check: Callable[[], object], timeout: float, what: str):
    return poll(check, timeout, what, interval=0.2)


@contextlib.contextmanager
def systemd_container(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Boot the container; yields a function that runs a bash command in it (its stdout)."""
    if not shutil.which("systemd-nspawn"):
        pytest.fail("systemd-nspawn not found: `make system-deps` installs systemd-container")
    root = tmp_path / "root"
    system = tmp_path / "system"  # the container's /etc/systemd/system: the unit, enabled
    supervise = tmp_path / "supervise"
    for d in (root, system / "multi-user.target.wants", supervise):
        d.mkdir(parents=True)
    shutil.copy(FILES / UNIT, system / UNIT)
    (system / "multi-user.target.wants" / UNIT).symlink_to(f"/etc/systemd/system/{UNIT}")
    (supervise / "probe.sh").write_text(PROCESS)
    script = tmp_path / "daskfleet-supervise"  # as the playbook installs it: executable
    shutil.copy(FILES / "daskfleet-supervise", script)
    script.chmod(0o755)
    log = open(tmp_path / "boot.log", "wb")
    subprocess.run(["mount", "--bind", "/", str(root)], check=True)
    boot = subprocess.Popen(
        ["systemd-nspawn", "-D", str(root), "--volatile=overlay", "--boot", "--keep-unit",
         "--register=no", "--private-network", "--machine", "dfsupervise", "--quiet",
         f"--bind-ro={system}:/etc/systemd/system",
         f"--bind-ro={script}:/usr/local/lib/daskfleet-supervise",
         f"--bind={supervise}:/var/lib/daskfleet/supervise"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def leader() -> int | None:
            assert boot.poll() is None, (tmp_path / "boot.log").read_text(errors="replace")
            kids = subprocess.run(["pgrep", "-P", str(boot.pid), "-x", "systemd"],
                                  capture_output=True, text=True).stdout.split()
            return int(kids[0]) if kids else None  # (nspawn's helpers come and go first)

        pid1 = _poll(leader, 60, "the container's systemd")

        def run(command: str) -> str:
            out = subprocess.run(["nsenter", "-t", str(pid1), "-a", "bash", "-c", command],
                                 capture_output=True, text=True, timeout=60)
            return out.stdout.strip()

        _poll(lambda: run("systemctl is-system-running") in ("running", "degraded"), 90,
              "the container's boot")
        yield run
    finally:
        boot.terminate()  # nspawn shuts the container down
        try:
            boot.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(boot.pid, 9)
            boot.wait()
        log.close()
        subprocess.run(["umount", str(root)], check=False)


def test_systemd_runs_the_supervisor_unit_as_real_hosts_get_it(tmp_path):
    with systemd_container(tmp_path) as run:
        def show(prop: str) -> str:
            return run(f"systemctl show -p {prop} --value {UNIT}")

        # enabled, so started at boot; and it started the node's process
        assert run(f"systemctl is-enabled {UNIT}") == "enabled"
        _poll(lambda: show("ActiveState") == "active", 60, "the supervisor's start at boot")
        probe = int(_poll(lambda: run("cat /run/probe.pid 2>/dev/null"), 30, "the process"))

        def alive(pid: int) -> bool:
            return run(f"kill -0 {pid} && echo yes") == "yes"

        assert alive(probe)
        assert "probe: was not running; started" in run("cat /var/log/daskfleet/supervisor.log")

        # the supervisor killed: systemd starts it again (Restart=always), the process runs on
        first = int(show("MainPID"))
        run(f"kill -KILL {first}")
        _poll(lambda: show("MainPID") not in ("0", str(first)) and show("ActiveState") ==
              "active", 30, "the supervisor's restart")
        assert int(show("NRestarts")) >= 1 and alive(probe)

        # a restart (a playbook installing a new supervisor) and a stop leave it running
        def rounds() -> list[str]:
            return run("cat /run/probe.calls").splitlines()

        for action, state in (("restart", "active"), ("stop", "inactive"), ("start", "active")):
            seen = len(rounds())
            run(f"systemctl {action} {UNIT}")
            assert show("ActiveState") == state and alive(probe), action
            if state == "active":  # the new supervisor's first round finds it running
                _poll(lambda seen=seen: len(rounds()) > seen, 30, f"a round after {action}")
        assert [r for r in rounds() if r.startswith("started")] == [f"started {probe}"]
        assert rounds()[-1] == f"running {probe}"
