"""A Dask process's unit, as `start` writes it on a node, run by systemd 252 itself: a container
of this machine (systemd-nspawn, its root this machine's, read-only under a tmpfs overlay, so
nothing it writes reaches this machine) boots systemd as its PID 1, with the node's housekeeping
unit enabled as the playbook installs it. The real RemoteProcess code (start, status, stop,
restore) runs its shell commands as root in the container (``processes.connect`` replaced: no
SSH), for a worker whose `dask` is a stand-in script at the cluster environment's path, run as
the cluster's user `dask-lab` (created in the container, as the playbook does).

systemd starts it, starts it again when it is killed and when it exits by itself with status 0
(a worker whose scheduler is gone), with the cluster file's limits and its log; `stop` leaves
nothing running and nothing to start at boot, and keeps the unit aside for `restore` when asked.
What systemd makes of a word systemd_quote wrote on a command line is checked here too, as only
PID 1 replaces a command line's $ variables.

The lab's hosts boot systemd too, and every e2e test runs the units there; what this test adds
is a look from outside at what systemd itself does with them (crashes, exits, stops)."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from polling import poll

from runner.cluster import processes
from runner.cluster.hosts import Host
from runner.cluster.process_settings import ENV_LINK, LOG_DIR, WORK_DIR, DaskSettings, ProcStatus
from runner.cluster.processes import RemoteProcess, systemd_quote
from runner.config import ProcessLimits
from runner.lab.addresses import SUBNET_PREFIX

pytestmark = pytest.mark.e2e

FILES = Path(__file__).resolve().parents[2] / "playbooks/roles/dask_node/files"
HOUSEKEEPING = "daskfleet-supervise.service"
ENV = ENV_LINK.format(cluster="lab")  # the cluster "lab"'s environment on a node
PROBE = "/run/probe"  # what the stand-in `dask` records (its user's folder)
# The cluster environment's `dask`, as the unit runs it: it says who runs it, where, with what,
# holds a child (as a worker's nanny holds its worker process), and exits with status 0 when
# told to (as a worker does once its scheduler is gone).
DASK = f"""#!/bin/bash
echo "dask pid=$$ user=$(id -un) cwd=$PWD DASK_CONFIG=$DASK_CONFIG"
echo "args: $*"
sleep 900 &
echo $! > {PROBE}/child
while [ ! -e {PROBE}/exit ]; do sleep 0.1; done
rm -f {PROBE}/exit
echo "dask pid=$$ exits 0"
"""
# The node's metadata guard (run as root before each start): says it ran, and as whom.
GUARD = "#!/bin/sh\necho \"metadata guard as uid $(id -u)\"\n"
# Writes the words it is given, and $PROBE, for the quoting check.
ARGV = f"#!/bin/bash\nprintf '%s\\0' \"$@\" > {PROBE}/argv\nprintf '%s' \"$PROBE\" > {PROBE}/env\n"

SCHED = Host("lab1", f"{SUBNET_PREFIX}11", "scheduler")
LIMITS = ProcessLimits(nofile=4000, nproc=5000, core_dumps=False).ulimits()


def worker(threads: int = 1) -> RemoteProcess:
    return RemoteProcess(Host("lab2", f"{SUBNET_PREFIX}12", "worker"), "worker", SCHED,
                         DaskSettings(cluster="lab", threads_per_worker=threads, limits=LIMITS))


def _poll(check: Callable[[], object], timeout: float, what: str):
    return poll(check, timeout, what, interval=0.2)


@contextlib.contextmanager
def systemd_container(tmp_path: Path) -> Iterator[Callable[[str], subprocess.CompletedProcess]]:
    """Boot the container; yields a function that runs a command in it, by sh as root."""
    if not shutil.which("systemd-nspawn"):
        pytest.fail("systemd-nspawn not found: `make system-deps` installs systemd-container")
    root = tmp_path / "root"
    # the container's /etc/systemd/system, writable: the housekeeping unit, enabled, and the
    # units `start` writes there
    system = tmp_path / "system"
    env = tmp_path / "env"
    for d in (root, system / "multi-user.target.wants", env / "bin"):
        d.mkdir(parents=True)
    env.chmod(0o755)
    (env / "bin").chmod(0o755)
    shutil.copy(FILES / HOUSEKEEPING, system / HOUSEKEEPING)
    (system / "multi-user.target.wants" / HOUSEKEEPING).symlink_to(
        f"/etc/systemd/system/{HOUSEKEEPING}")
    executables = {"daskfleet-supervise": (FILES / "daskfleet-supervise").read_text(),
                   "guard": GUARD, "env/bin/dask": DASK, "env/bin/argv": ARGV}
    for name, text in executables.items():  # as the playbook installs them: executable
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    log = open(tmp_path / "boot.log", "wb")
    subprocess.run(["mount", "--bind", "/", str(root)], check=True)
    boot = subprocess.Popen(
        ["systemd-nspawn", "-D", str(root), "--volatile=overlay", "--boot", "--keep-unit",
         "--register=no", "--private-network", "--machine", "dfsupervise", "--quiet",
         f"--bind={system}:/etc/systemd/system",
         f"--bind-ro={tmp_path / 'daskfleet-supervise'}:/usr/local/lib/daskfleet-supervise",
         f"--bind-ro={tmp_path / 'guard'}:{processes.METADATA_GUARD}",
         f"--bind-ro={env}:{ENV}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def leader() -> int | None:
            assert boot.poll() is None, (tmp_path / "boot.log").read_text(errors="replace")
            kids = subprocess.run(["pgrep", "-P", str(boot.pid), "-x", "systemd"],
                                  capture_output=True, text=True).stdout.split()
            return int(kids[0]) if kids else None  # (nspawn's helpers come and go first)

        pid1 = _poll(leader, 60, "the container's systemd")

        def run(command: str) -> subprocess.CompletedProcess:
            return subprocess.run(["nsenter", "-t", str(pid1), "-a", "sh", "-c", command],
                                  capture_output=True, text=True, timeout=60)

        _poll(lambda: run("systemctl is-system-running").stdout.strip() in ("running", "degraded"),
              90, "the container's boot")
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


@pytest.fixture(scope="module")
def booted(tmp_path_factory) -> Iterator[Callable[[str], subprocess.CompletedProcess]]:
    """The container, made a node of the cluster "lab" as the playbook makes one: its user, its
    folders and a Dask config file (no certificates: the process does not use TLS here)."""
    tmp_path = tmp_path_factory.mktemp("systemd")
    with systemd_container(tmp_path) as run:
        done = run(f"useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "
                   f"dask-lab && install -d -m 0755 {LOG_DIR} && "
                   f"install -d -m 0700 -o dask-lab -g dask-lab {WORK_DIR.format(cluster='lab')} "
                   f"{PROBE} && install -d -m 0755 /etc/daskfleet/lab/dask && "
                   "echo 'version: 1' > /etc/daskfleet/lab/dask/daskfleet.yaml")
        assert done.returncode == 0, done.stderr
        yield run


@pytest.fixture
def container(booted, monkeypatch) -> Callable[[str], str]:
    """RemoteProcess's commands go to the container (as root, by sh): what `connect` yields
    for a root login; returns a function that runs a command there (its stdout)."""
    def result(command: str, **_kwargs) -> SimpleNamespace:
        done = booted(command)
        return SimpleNamespace(stdout=done.stdout, stderr=done.stderr, exited=done.returncode,
                               ok=done.returncode == 0, failed=done.returncode != 0)

    @contextlib.contextmanager
    def connect(host, ssh):
        yield SimpleNamespace(run=result)

    monkeypatch.setattr(processes, "connect", connect)
    return lambda command: booted(command).stdout.strip()


def test_the_housekeeping_unit_runs_from_boot(container):
    assert container(f"systemctl is-enabled {HOUSEKEEPING}") == "enabled"
    _poll(lambda: container(f"systemctl is-active {HOUSEKEEPING}") == "active", 60,
          "the housekeeping unit's start at boot")
    _poll(lambda: "metadata guard: metadata guard as uid 0" in
          container(f"cat {LOG_DIR}/supervisor.log"), 30, "the metadata guard at boot")


def test_systemd_runs_a_dask_process_as_its_unit_until_it_is_stopped(container):
    proc = worker()
    unit, log = proc.unit, proc.log_file
    run = container

    def show(prop: str) -> str:
        return run(f"systemctl show -p {prop} --value {unit}")

    def status() -> ProcStatus:
        return proc.status(None)

    def dask_said(pid: int) -> str:
        """The line of the log where the stand-in `dask` of that pid says how it runs."""
        return _poll(lambda: next((x for x in run(f"cat {log}").splitlines()
                                   if x.startswith(f"dask pid={pid} user=")), None), 15,
                     f"the process {pid}'s first line in its log")

    def running() -> list[str]:  # what the cluster's user runs in the container
        return run("pgrep -u dask-lab -a || true").splitlines()

    # `start`: the unit written, enabled, started; its pid
    pid = proc.start(None)
    assert show("MainPID") == str(pid) and show("ActiveState") == "active"
    assert run(f"systemctl is-enabled {unit}") == "enabled"
    assert run(f"cat {proc.unit_path}") == proc.unit_text().strip()
    # as the cluster's user, in its working folder, with its environment and command line
    assert dask_said(pid) == (f"dask pid={pid} user=dask-lab cwd={proc.settings.work_dir} "
                              f"DASK_CONFIG={proc.environment()['DASK_CONFIG']}")
    assert f"args: {' '.join(proc.command()[1:])}" in run(f"cat {log}").splitlines()
    # the cluster file's limits, soft and hard
    limits = {line[:26].strip(): line[26:].split()[:2]
              for line in run(f"cat /proc/{pid}/limits").splitlines()[1:]}
    assert limits["Max open files"] == ["4000", "4000"], limits
    assert limits["Max processes"] == ["5000", "5000"], limits
    assert limits["Max core file size"] == ["0", "0"], limits

    # `status`: its unit's, with the digests it started with
    now = status()
    assert (now.state, now.pid, now.unit, now.restarts) == ("running", pid, True, 0), now
    assert now.spec == proc.spec_digest and now.memory_limit == "auto", now
    assert now.files and now.files == now.files_now, now
    # the node's config changes: `status` sees it (`up` restarts the process for it)
    run("echo 'version: 2' > /etc/daskfleet/lab/dask/daskfleet.yaml")
    changed = status()
    assert changed.files == now.files and changed.files_now != now.files, changed

    # killed: systemd starts it again (after RestartSec=5), with the node files as they are now
    child = int(run(f"cat {PROBE}/child"))
    run(f"kill -KILL {pid}")
    again = _poll(lambda: (s := status()).state == "running" and s.pid != pid and s, 15,
                  "its start again after a SIGKILL")
    assert again.restarts == 1 and again.files == again.files_now == changed.files_now, again
    assert run(f"kill -0 {child} 2>/dev/null && echo alive") == ""  # its child went with it
    dask_said(again.pid)

    # exits with status 0 (a worker whose scheduler is gone): started again too
    run(f"touch {PROBE}/exit")
    third = _poll(lambda: (s := status()).state == "running" and s.pid != again.pid and s, 15,
                  "its start again after it exited 0")
    assert third.restarts == 2, third
    dask_said(third.pid)
    lines = run(f"cat {log}").splitlines()
    assert f"dask pid={again.pid} exits 0" in lines
    # each start in its log: the metadata guard (as root), then the start's line
    starts = [i for i, x in enumerate(lines)
              if re.fullmatch(r"--- \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ start lab2-w0", x)]
    assert len(starts) == 3 and all(lines[i - 1] == "metadata guard as uid 0" for i in starts), lines

    # `stop` before a replacement ("save"): nothing left running, nothing started at boot, the
    # unit kept aside
    cgroup = show("ControlGroup")
    assert cgroup and proc.stop(None, "save") is True
    assert running() == [] and run(f"test -e /sys/fs/cgroup{cgroup} && echo left") == ""
    assert run(f"test -e {proc.unit_path} && echo left") == ""
    assert run(f"ls /etc/systemd/system/multi-user.target.wants/{unit} 2>/dev/null") == ""
    assert run(f"cat {proc.kept_path}") == proc.unit_text().strip()
    assert status().state == "dead"
    run("sleep 6")  # past RestartSec: systemd does not start it again
    assert running() == []

    # the replacement (2 threads) starts, then fails and is stopped ("keep"): the unit kept
    # aside stays, and `restore` starts the process as it was
    new = worker(threads=2)
    new_pid = new.start(None)
    assert "--nthreads 2" in run(f"tr '\\0' ' ' < /proc/{new_pid}/cmdline")
    assert new.stop(None, "keep") is True and running() == []
    assert run(f"cat {proc.kept_path}") == proc.unit_text().strip()
    back = proc.restore(None)
    assert back and show("MainPID") == str(back) and show("ActiveState") == "active"
    assert run(f"systemctl is-enabled {unit}") == "enabled"
    assert "--nthreads 1" in run(f"tr '\\0' ' ' < /proc/{back}/cmdline")
    assert run(f"test -e {proc.kept_path} && echo left") == ""
    assert proc.restore(None) is None  # nothing kept aside now

    # `down` during a replacement ("drop"): the unit and the one kept aside both go
    assert proc.stop(None, "save") is True
    assert new.start(None) and new.stop(None, "drop") is True
    assert running() == []
    assert run(f"ls {proc.unit_path} {proc.kept_path} 2>/dev/null") == ""
    assert run(f"ls /etc/systemd/system/multi-user.target.wants/{unit} 2>/dev/null") == ""
    # and again: a stale record never fails a stop, and it was not running
    assert new.stop(None, "drop") is False


def test_a_held_process_that_exits_is_not_started_again_until_its_stop(container):
    """Before a retirement closes a worker (its data moves first), `hold` keeps systemd from
    starting it again: the exit leaves the unit inactive, not waiting to restart (without the
    hold, Restart=always makes it `auto-restart` at once). `stop` removes the hold."""
    proc = worker()
    pid = proc.start(None)
    try:
        proc.hold(None)
        assert container(f"systemctl show -p Restart --value {proc.unit}") == "no"
        assert proc.status(None).pid == pid  # held, it runs on until it exits
        container(f"touch {PROBE}/exit")
        state = _poll(lambda: (s := container(f"systemctl show -p ActiveState -p SubState "
                                              f"{proc.unit}")) and "SubState=running" not in s
                      and s, 15, "its exit")
        assert set(state.split()) == {"ActiveState=inactive", "SubState=dead"}, state
    finally:
        proc.stop(None)
    assert container(f"ls -d /run/systemd/system/{proc.unit}.d 2>/dev/null") == ""
    again = proc.start(None)  # and a later start of the same process restarts as before
    try:
        assert container(f"systemctl show -p Restart --value {proc.unit}") == "always"
    finally:
        proc.stop(None)
    assert again != pid


def test_systemd_runs_a_command_line_systemd_quote_wrote_word_for_word(container):
    """Words a unit file treats specially, on a command line and in the environment of a
    unit, as the process systemd starts gets them: a $ too, which only PID 1 replaces."""
    words = ["", "a b", "$HOME", "$$", "${X}", "100%", "%n", 'say "hi"', "back\\slash", "it's",
             ";", "x;y"]
    word = "a $HOME %n \"q\" \\ it's"
    unit = "daskfleet-quote-probe.service"
    text = ("[Service]\nType=oneshot\n"
            f"Environment={systemd_quote(f'PROBE={word}', command=False)}\n"
            f"ExecStart={ENV}/bin/argv {' '.join(systemd_quote(w) for w in words)}\n")
    container(f"cat > /etc/systemd/system/{unit} <<'EOF'\n{text}EOF\n"
            f"systemctl daemon-reload && systemctl start {unit}")
    assert container(f"systemctl show -p Result --value {unit}") == "success"
    argv = base64.b64decode(container(f"base64 -w0 {PROBE}/argv")).decode()
    assert argv.split("\0")[:-1] == words
    assert base64.b64decode(container(f"base64 -w0 {PROBE}/env")).decode() == word


def test_a_limit_above_the_hosts_hard_limit_fails_the_start_and_says_so(container):
    """systemd quietly lowers a limit it may not set to the host's; the unit checks, as its
    process will run, and refuses to start: `up` names the limit and what to change."""
    from runner.errors import ClusterStartError

    hard = int(next(line.split()[4] for line in container("cat /proc/1/limits").splitlines()
                    if line.startswith("Max open files")))
    assert hard < 1048576, f"PID 1's hard open-files limit is {hard}: nothing above it to ask"
    proc = RemoteProcess(Host("lab2", f"{SUBNET_PREFIX}12", "worker"), "worker", SCHED,
                         DaskSettings(cluster="lab", limits=ProcessLimits(nofile=hard + 1)
                                      .ulimits()))
    try:
        with pytest.raises(ClusterStartError) as e:
            proc.start(None)
        said = str(e.value)
        assert f"ulimit -n is {hard} here, not {hard + 1}" in said, said
        assert "lower the value in the cluster file" in said, said
        assert container("pgrep -u dask-lab -a || true") == ""
    finally:
        proc.stop(None)
