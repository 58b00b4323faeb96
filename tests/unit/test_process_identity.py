"""What is left of the processes an older daskfleet started (detached, tracked by pid files),
before each Dask process became a systemd unit of its own: `status` still recognises them, and
`stop` still stops them. A pid file names one process only: the recorded pid, with the start
time recorded with it, run by the cluster's user, running our own command line (kind, the
cluster's scheduler address, the worker's name). The legacy stop script, run for real by bash
(as on a node), stops that process only, and a stale pid file never makes it fail.

Also the unit's parts that need no systemd: `status` reads a pid file only where the process
has no unit (and says unit=0, so `up` replaces it), the cluster file's limits are the unit's,
and a start that systemd refuses for a limit is explained. The unit as systemd reads it:
tests/unit/test_process_unit.py; run by systemd: tests/e2e/test_14_units_under_systemd.py.

Here the cluster's user is this test's user (``as_me``); the tests of another user need root,
as the lab does."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runner.cluster import process_settings, processes
from runner.cluster.hosts import Host
from runner.cluster.process_settings import DaskSettings
from runner.cluster.processes import START_TIME, RemoteProcess
from runner.config import ProcessLimits

SCHED = Host("lab1", "198.18.0.11", "scheduler")
WORKER = RemoteProcess(Host("lab2", "198.18.0.12", "worker"), "worker", SCHED,
                       DaskSettings(cluster="lab"))


ME = getpass.getuser()


def on_node(monkeypatch, name: str, value) -> None:
    """A node path or the cluster's user (runner.cluster.process_settings) replaced wherever it
    is read: processes.py reads some of those names itself, imported from there."""
    for module in (process_settings, processes):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, value)


@pytest.fixture(autouse=True)
def as_me(monkeypatch):
    """Every cluster's user is this test's user (a node's would be dask-<cluster>)."""
    on_node(monkeypatch, "cluster_user", lambda cluster: ME)


def pid_file(tmp_path: Path, proc: RemoteProcess) -> Path:
    """Where ``proc``'s pid file is, with RUN_DIR at ``tmp_path``: its cluster's folder."""
    path = tmp_path / proc.settings.cluster / f"{proc.name}.pid"
    path.parent.mkdir(exist_ok=True)
    return path


def check(proc: RemoteProcess) -> int:
    return subprocess.run(["sh", "-c", proc._ours() + "; exit $?"]).returncode


@pytest.fixture
def fake_worker(tmp_path, monkeypatch):
    """A process whose command line is the worker's (as `dask worker ...` would show it)."""
    on_node(monkeypatch, "RUN_DIR", str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                          *WORKER.command()], start_new_session=True)  # setsid, as started
    yield p
    p.kill()
    p.wait()


def start_time(pid: int) -> str:
    return subprocess.run(["sh", "-c", START_TIME.replace("$pid", str(pid))], capture_output=True,
                          text=True).stdout.strip()


def test_the_recorded_process_is_ours(fake_worker, tmp_path):
    pid_file(tmp_path, WORKER).write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    assert check(WORKER) == 0


def test_a_pid_file_of_a_daskfleet_before_per_cluster_users_is_still_read(fake_worker, tmp_path):
    (tmp_path / "lab-lab2-w0.pid").write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    assert check(WORKER) == 0


def test_the_same_command_line_run_by_another_user_is_not_ours(tmp_path, monkeypatch):
    """Another cluster's user on the same host could run a process with this cluster's command
    line: its pid in this cluster's pid file does not make it this cluster's."""
    assert os.geteuid() == 0, "this test runs a process as another user: run it as root"
    on_node(monkeypatch, "RUN_DIR", str(tmp_path))
    # sh, not this venv's python, which nobody may not run; its command line holds the worker's
    p = subprocess.Popen(["/bin/sh", "-c", "sleep 60; :", *WORKER.command()],
                         start_new_session=True, user="nobody")
    try:
        pid_file(tmp_path, WORKER).write_text(f"{p.pid} {start_time(p.pid)}\n")
        assert check(WORKER) == 4
        out = stop(WORKER)
        assert out.stdout.strip() == "gone" and p.poll() is None, out  # not signalled
    finally:
        p.kill()
        p.wait()


def test_a_reused_pid_with_another_start_time_is_not_ours(fake_worker, tmp_path):
    pid_file(tmp_path, WORKER).write_text(f"{fake_worker.pid} 1\n")
    assert check(WORKER) == 4


def test_another_clusters_worker_of_the_same_name_is_not_ours(fake_worker, tmp_path):
    other = RemoteProcess(WORKER.host, "worker", SCHED, DaskSettings(cluster="plain"))
    pid_file(tmp_path, other).write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    assert other.name == WORKER.name and check(other) == 4
    w10 = RemoteProcess(WORKER.host, "worker", SCHED, DaskSettings(cluster="lab"), index=10)
    pid_file(tmp_path, w10).write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    assert check(w10) == 4  # lab2-w10 never matches lab2-w0's process, nor w1 w10's


def test_the_same_process_with_other_settings_is_still_ours(fake_worker, tmp_path):
    """A changed port or thread count makes a process to replace, never one to lose track of
    (the old scheduler left running on its old port, untracked)."""
    moved = RemoteProcess(WORKER.host, "worker", SCHED, DaskSettings(cluster="lab",
                                                                     scheduler_port=8796))
    pid_file(tmp_path, moved).write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    assert check(moved) == 0
    assert moved.spec_digest != WORKER.spec_digest


def test_a_missing_pid_file_is_not_running(tmp_path, monkeypatch):
    on_node(monkeypatch, "RUN_DIR", str(tmp_path))
    assert check(WORKER) == 3


def stop(proc: RemoteProcess) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", proc._legacy_stop_script()], capture_output=True, text=True,
                          timeout=30)


def test_stop_stops_the_recorded_process_and_removes_its_pid_file(fake_worker, tmp_path):
    path = pid_file(tmp_path, WORKER)
    path.write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    # reaped as soon as it exits, as init reaps a node's detached dask process (a zombie would
    # still count as alive to `kill -0` until the grace period ends)
    threading.Thread(target=fake_worker.wait, daemon=True).start()
    out = stop(WORKER)
    assert out.returncode == 0 and out.stdout.strip() == "stopped", out
    assert fake_worker.wait(timeout=10) is not None and not path.exists()


def test_a_process_that_already_exited_is_cleaned_up_not_an_error(tmp_path, monkeypatch):
    on_node(monkeypatch, "RUN_DIR", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass", *WORKER.command()[1:]])
    gone.wait()
    path = pid_file(tmp_path, WORKER)
    path.write_text(f"{gone.pid} 12345\n")  # a worker that exited by itself
    for _ in range(2):  # and again: nothing is left to jam the next stop
        out = stop(WORKER)
        assert out.returncode == 0 and out.stdout.strip() == "gone", out
        assert not path.exists()


def test_a_pid_now_held_by_another_process_is_not_signalled(fake_worker, tmp_path):
    other = RemoteProcess(WORKER.host, "worker", SCHED, DaskSettings(cluster="plain"))
    pid_file(tmp_path, other).write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    out = stop(other)
    assert out.returncode == 0 and out.stdout.strip() == "gone", out
    assert fake_worker.poll() is None  # still running: not ours to stop


def test_status_reports_the_digests_the_process_started_with_and_the_files_now(fake_worker,
                                                                              tmp_path):
    pid_file(tmp_path, WORKER).write_text(
        f"{fake_worker.pid} {start_time(fake_worker.pid)} {WORKER.spec_digest} 0123abcd\n")
    out = subprocess.run(["sh", "-c", WORKER._status_script()], capture_output=True, text=True,
                         timeout=30)
    fields = dict(f.split("=", 1) for f in out.stdout.split()[1:])
    assert out.stdout.split()[0] == str(fake_worker.pid), out
    assert fields["spec"] == WORKER.spec_digest and fields["files"] == "0123abcd"
    # the node files' digest as of now (none here: the digest of nothing), 16 hex digits
    assert len(fields["files_now"]) == 16 and fields["files_now"] != "0123abcd"
    assert fields["mem"] == "auto"


def _status(proc: RemoteProcess) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", proc._status_script()], capture_output=True, text=True,
                          timeout=30)


def test_a_process_an_older_daskfleet_started_is_reported_outside_systemd(fake_worker, tmp_path,
                                                                         monkeypatch):
    """No unit of it on the node: its pid file is read, and `status` says unit=0 (no restart
    count), which makes `up` replace it by its unit (runner/cluster/changes.py)."""
    on_node(monkeypatch, "UNIT_DIR", str(tmp_path / "units"))
    pid_file(tmp_path, WORKER).write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    out = _status(WORKER)
    fields = dict(f.split("=", 1) for f in out.stdout.split()[1:])
    assert out.stdout.split()[0] == str(fake_worker.pid), out
    assert fields["unit"] == "0" and fields["restarts"] == "", out.stdout


def test_once_its_unit_is_written_a_pid_file_no_longer_says_it_runs(fake_worker, tmp_path,
                                                                   monkeypatch):
    """The unit decides: a unit that systemd does not run (here no systemd loaded it) is not
    running, whatever pid file an older daskfleet left."""
    units = tmp_path / "units"
    units.mkdir()
    on_node(monkeypatch, "UNIT_DIR", str(units))
    (units / WORKER.unit).write_text(WORKER.unit_text())
    pid_file(tmp_path, WORKER).write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    out = _status(WORKER)
    assert out.returncode != 0 and out.stdout == "", out


def test_a_stop_with_no_unit_stops_an_older_daskfleets_process_and_drops_a_unit_kept_aside(
        fake_worker, tmp_path, monkeypatch):
    """`stop`'s whole script where the node has no unit of the process (an older daskfleet
    started it): its process is stopped by its pid file, and "drop" removes a unit that a
    replacement kept aside (no systemd is asked for anything here)."""
    for name in ("UNIT_DIR", "KEPT_DIR"):
        (tmp_path / name).mkdir()
        on_node(monkeypatch, name, str(tmp_path / name))
    kept = tmp_path / "KEPT_DIR" / WORKER.unit
    kept.write_text(WORKER.unit_text())
    pid_file(tmp_path, WORKER).write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    threading.Thread(target=fake_worker.wait, daemon=True).start()  # reaped, as init would
    out = subprocess.run(["sh", "-c", WORKER._stop_command("drop")], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.split() == ["stopped"], out
    assert fake_worker.wait(timeout=10) is not None and not kept.exists()


@pytest.mark.parametrize(("core_dumps", "core"), [(True, "infinity"), (False, "0")])
def test_the_files_limits_are_its_units_and_part_of_its_digest(core_dumps, core):
    """`dask.limits` become the unit's own limits (systemd sets them, soft and hard, before it
    switches to the cluster's user), and a change of limits is a change of the process: `up`
    replaces it, and says why."""
    limits = ProcessLimits(nofile=4000, nproc=5000, core_dumps=core_dumps).ulimits()
    limited = RemoteProcess(WORKER.host, "worker", SCHED, DaskSettings(cluster="lab",
                                                                       limits=limits))
    lines = limited.unit_text().splitlines()
    service = lines[lines.index("[Service]"):lines.index("[Install]")]
    assert [x for x in service if x.startswith("Limit")] == [
        "LimitNOFILE=4000", "LimitNPROC=5000", f"LimitCORE={core}"]
    assert not [x for x in WORKER.unit_text().splitlines() if x.startswith("Limit")]
    assert limited.spec_digest != WORKER.spec_digest
    # what `status` reads back from the unit
    assert f"X-Daskfleet-Spec={limited.spec_digest}" in lines


@pytest.mark.parametrize("journal", [
    # systemd 252's journal of a unit whose LimitNOFILE= the host would not grant
    "daskfleet-lab-scheduler.service: Failed to adjust resource limit RLIMIT_NOFILE: "
    "Operation not permitted",
    "daskfleet-lab-scheduler.service: Failed at step LIMITS spawning "
    "/usr/local/lib/daskfleet-metadata-guard: Operation not permitted",
])
def test_a_limit_the_host_will_not_raise_is_explained(journal):
    said = processes.explain_start_failure(journal)
    assert said.startswith(journal) and "dask.limits asks for more than the host's hard limit" in said


def test_another_start_failure_is_reported_as_systemd_says_it():
    journal = ("daskfleet-lab-scheduler.service: Failed at step CHDIR spawning "
               "/opt/daskfleet/clusters/lab/current/bin/dask: No such file or directory")
    assert processes.explain_start_failure(journal) == journal
