"""A pid file names one process only: the recorded pid, with the start time recorded with it,
run by the cluster's user, running our own command line (kind, the cluster's scheduler address,
the worker's name). The stop script, run for real by bash (as on a node), stops that process
only, and a stale pid file never makes it fail. Here the cluster's user is this test's user
(``as_me``); the tests of another user need root, as the lab does."""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import subprocess
import sys
import time
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
    return subprocess.run(["bash", "-c", proc._stop_script()], capture_output=True, text=True,
                          timeout=30)


def test_stop_stops_the_recorded_process_and_removes_its_pid_file(fake_worker, tmp_path):
    path = pid_file(tmp_path, WORKER)
    path.write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    # reaped as soon as it exits, as init reaps a node's detached dask process (a zombie would
    # still count as alive to `kill -0` until the grace period ends)
    import threading

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


def test_status_says_whether_the_nodes_supervisor_has_the_process(fake_worker, tmp_path,
                                                                  monkeypatch):
    """A process started before its node had a supervisor is reported unsupervised, so `up`
    hands it over without restarting it."""
    monkeypatch.setattr(processes, "SUPERVISE_DIR", str(tmp_path / "supervise"))
    pid_file(tmp_path, WORKER).write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")

    def supervised() -> str:
        out = subprocess.run(["sh", "-c", WORKER._status_script()], capture_output=True,
                             text=True, timeout=30)
        return dict(f.split("=", 1) for f in out.stdout.split()[1:])["sup"]

    assert supervised() == "0"
    subprocess.run(["sh", "-c", WORKER._write_supervised()], check=True, timeout=30)
    assert supervised() == "1"
    assert "started" in (tmp_path / "supervise" / "lab-lab2-w0.sh").read_text()


def _node_folders(tmp_path, monkeypatch, names: tuple[str, ...]) -> None:
    """The node's folders under tmp_path, and the cluster "lab"'s `dask`: one whose command
    line stays the worker's (the identity check reads it), sleeping a minute."""
    for name in names:
        (tmp_path / name).mkdir()
        on_node(monkeypatch, name, str(tmp_path / name))
    env = tmp_path / "clusters" / "{cluster}" / "current"
    on_node(monkeypatch, "ENV_LINK", str(env))
    dask = Path(str(env).format(cluster="lab")) / "bin" / "dask"
    dask.parent.mkdir(parents=True)
    dask.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import time; time.sleep(60)' "
                    "\"$0\" \"$@\"\n")
    dask.chmod(0o755)


def test_the_supervisors_script_starts_the_process_only_when_it_is_not_running(tmp_path,
                                                                                monkeypatch):
    """What the node's supervisor runs every few seconds (and `start` once): `started PID` when
    the process was not running, `running PID` (and nothing started) when it is."""
    _node_folders(tmp_path, monkeypatch, ("RUN_DIR", "WORK_DIR", "LOG_DIR"))
    (tmp_path / "RUN_DIR" / "lab").mkdir()  # the cluster's pid folder (the supervisor makes it)
    worker = RemoteProcess(Host("lab2", "198.18.0.12", "worker"), "worker", SCHED,
                           DaskSettings(cluster="lab"))

    def ensure() -> tuple[str, int]:
        out = subprocess.run(["bash", "-c", worker._ensure_script()], capture_output=True,
                             text=True, timeout=30)
        word, pid = out.stdout.split()[-2:]
        return word, int(pid)

    try:
        first = ensure()
        assert first[0] == "started"
        assert ensure() == ("running", first[1])  # alive: left alone, nothing started
        os.killpg(first[1], signal.SIGKILL)  # a crash
        deadline = time.monotonic() + 10
        while Path(f"/proc/{first[1]}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        again = ensure()
        assert again[0] == "started" and again[1] != first[1]
    finally:
        for line in (tmp_path / "RUN_DIR").glob("*/*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int(line.read_text().split()[0]), signal.SIGKILL)


def test_the_files_limits_are_the_started_processs_own_and_part_of_its_digest(tmp_path,
                                                                             monkeypatch):
    """`dask.limits` is applied (soft and hard) by the script the supervisor runs, before it
    switches to the cluster's user, and a change of limits is a change of the process."""
    _node_folders(tmp_path, monkeypatch, ("RUN_DIR", "WORK_DIR", "LOG_DIR", "SUPERVISE_DIR"))
    me = getpass.getuser()  # the cluster's user here: runuser to ourselves
    on_node(monkeypatch, "cluster_user", lambda cluster: me)
    limits = ProcessLimits(nofile=4000, nproc=5000, core_dumps=False).ulimits()
    host = Host("lab2", "198.18.0.12", "worker")
    plain = RemoteProcess(host, "worker", SCHED, DaskSettings(cluster="lab"))
    limited = RemoteProcess(host, "worker", SCHED, DaskSettings(cluster="lab", limits=limits))
    assert plain.spec_digest != limited.spec_digest  # `up` replaces it, and says why
    # runuser's pam_limits puts the soft open-files limit back to 1024 (the kernel's default)
    # when limits.conf names none: 4000 shows whether the script sets it again as the user
    out = subprocess.run(["bash", "-c", limited._supervised_script()], capture_output=True,
                         text=True, timeout=30)
    assert "started" in out.stdout, (out.stdout, out.stderr)
    pid = int(out.stdout.split()[-1])
    try:
        have = {line[:26].strip(): line[26:].split()[:2]
                for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]}
    finally:
        os.killpg(pid, signal.SIGKILL)
    assert have["Max open files"] == ["4000", "4000"], have
    assert have["Max processes"] == ["5000", "5000"], have
    assert have["Max core file size"] == ["0", "0"], have


def test_a_limit_the_host_will_not_raise_is_explained():
    out = ("/var/lib/daskfleet/supervise/lab-scheduler.sh: line 2: ulimit: open files: cannot "
           "modify limit: Operation not permitted")
    said = processes.explain_start_failure(out)
    assert said.startswith(out) and "dask.limits asks for more than the host's hard limit" in said
    assert processes.explain_start_failure("no such file") == "no such file"


def test_a_failed_replacement_starts_the_old_process_again_from_its_script_kept_aside(
        tmp_path, monkeypatch):
    """The node's side of a restart that fails (runner/cluster/reconcile.py): the old
    process's supervisor script is kept aside when it is stopped for its replacement; the
    replacement stopped, `restore` starts the old one again from it, as it was."""
    _node_folders(tmp_path, monkeypatch, ("RUN_DIR", "WORK_DIR", "LOG_DIR", "SUPERVISE_DIR"))
    host = Host("lab2", "198.18.0.12", "worker")
    old = RemoteProcess(host, "worker", SCHED, DaskSettings(cluster="lab", threads_per_worker=1))
    new = RemoteProcess(host, "worker", SCHED, DaskSettings(cluster="lab", threads_per_worker=2))
    script = Path(old.supervise_file)
    kept = Path(f"{old.supervise_file}.prev")

    def sh(command: str) -> str:
        out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out
        return out.stdout.strip()

    def start(p: RemoteProcess) -> int:
        return int(sh(p._write_supervised() + " && " + p._locked(f"bash {p.supervise_file}"))
                   .split()[-1])

    def threads(pid: int) -> str:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return args[args.index(b"--nthreads") + 1].decode()

    try:
        assert threads(start(old)) == "1"
        assert sh(old._stop_command("save")) == "stopped"
        assert not script.exists() and kept.read_text() == old._supervised_script()
        assert threads(start(new)) == "2"  # the replacement, which then fails
        assert sh(new._stop_command("keep")) == "stopped"
        assert kept.exists()
        back = int(sh(old._restore_command()).split()[-1])
        assert threads(back) == "1" and script.read_text() == old._supervised_script()
        assert not kept.exists() and sh(old._restore_command()) == "none"  # nothing aside now
        assert sh(old._stop_command("drop")) == "stopped"
        assert not script.exists() and not kept.exists()
    finally:
        for line in (tmp_path / "RUN_DIR").glob("*/*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int(line.read_text().split()[0]), signal.SIGKILL)
