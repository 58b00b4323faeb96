"""A Dask process's systemd unit, as `start` writes it on a node (RemoteProcess.unit_text), is
one systemd itself accepts, and systemd reads its command line and environment back word for
word, whatever they hold (systemd_quote). The fast tier's checks, with systemd's own tools and no
systemd running: `systemd-analyze verify`, and the service manager's test mode (`systemd
--test`), which parses the units as PID 1 would and prints what it made of them.
tests/e2e/test_14_units_under_systemd.py runs the unit under systemd."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_process_identity import on_node
from test_supervisor_unit import verify_units

from runner.cluster.hosts import Host
from runner.cluster.process_settings import DaskSettings
from runner.cluster.processes import METADATA_GUARD, RemoteProcess
from runner.config import ProcessLimits

SCHED = Host("lab1", "198.18.0.11", "scheduler")
LIMITS = ProcessLimits(nofile=4000, nproc=5000, core_dumps=True).ulimits()


def lab_processes() -> list[RemoteProcess]:
    return [RemoteProcess(SCHED, "scheduler", SCHED, DaskSettings(cluster="lab")),
            RemoteProcess(Host("lab2", "198.18.0.12", "worker"), "worker", SCHED,
                          DaskSettings(cluster="lab", limits=LIMITS), index=1)]


@pytest.fixture
def runnable(tmp_path, monkeypatch):
    """`systemd-analyze verify` checks that every command of a unit is an executable file, and
    the node's `dask` (in the cluster's environment) and metadata guard do not exist here: both
    are executables in tmp_path (the unit is still the one unit_text writes). It does not look
    up User=/Group=, WorkingDirectory= or the append: log (dask-lab and /var/log/daskfleet do
    not exist here either), so those stay as a node has them."""
    env = tmp_path / "env" / "{cluster}" / "current"
    dask = Path(str(env).format(cluster="lab")) / "bin" / "dask"
    dask.parent.mkdir(parents=True)
    guard = tmp_path / "daskfleet-metadata-guard"
    for exe in (dask, guard):
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    on_node(monkeypatch, "ENV_LINK", str(env))
    on_node(monkeypatch, "METADATA_GUARD", str(guard))


def test_the_units_of_a_scheduler_and_of_a_worker_with_limits_are_valid(runnable, tmp_path):
    units = {p.unit: p.unit_text() for p in lab_processes()}
    assert "LimitNOFILE=4000\n" in units["daskfleet-lab-lab2-w1.service"]
    done = verify_units(units, tmp_path / "units")
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize(("good", "bad", "said"), [
    # a % not doubled (the log line's date format): a specifier systemd cannot resolve, and the
    # unit would not start at all
    ("%%FT%%TZ", "%FT%TZ", "Failed to resolve unit specifiers"),
    # a misspelt value: systemd would ignore the line, and the process run without the limit
    ("LimitCORE=infinity", "LimitCORE=infinty", "Failed to parse resource value"),
])
def test_a_unit_with_a_bad_setting_fails_the_check(runnable, tmp_path, good, bad, said):
    worker = lab_processes()[1]
    assert good in worker.unit_text()
    done = verify_units({worker.unit: worker.unit_text().replace(good, bad)}, tmp_path / "units")
    assert said in done.stderr


# --- what systemd reads back ------------------------------------------------------------------

def systemd_reads(unit: str, text: str) -> dict[str, list]:
    """What systemd makes of the unit ``text``: the service manager in test mode loads it (as
    PID 1 would, without running anything) and dumps it: each Exec setting's command lines (a
    list of argv) and its Environment (one assignment a line). systemd refuses its test mode to
    root, so root runs it as `nobody`, from a folder `nobody` may read."""
    tool = next((t for t in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
                 if os.access(t, os.X_OK)), None)
    assert tool, "systemd not found: install the systemd package (Debian: apt install systemd)"
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        (Path(folder) / unit).write_text(text)
        (Path(folder) / unit).chmod(0o644)
        as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        # (the trailing colon: the system's own units too, which every unit depends on)
        done = subprocess.run([*as_user, tool, "--test", "--system", f"--unit={unit}",
                               "--no-pager"], env={**os.environ, "SYSTEMD_UNIT_PATH": folder + ":"},
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = lines.index(f"\t-> Unit {unit}:")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("\t-> Unit ")),
               len(lines))
    read: dict[str, list] = {}
    setting = None
    for line in lines[start:end]:
        if m := re.fullmatch(r"\t\t-> (Exec\w+):", line):
            setting = m[1]
        elif line.startswith("\t\t\tCommand Line: ") and setting:
            read.setdefault(setting, []).append(shell_words(line.split(": ", 1)[1]))
        elif line.startswith("\t\tEnvironment: "):
            read.setdefault("Environment", []).append(line.split(": ", 1)[1])
    return read


def shell_words(line: str) -> list[str]:
    """The words of a command line as systemd prints it (quoted for a shell: a word with a
    special character in double quotes, with \\ before each \\, ", $ and `)."""
    return [bare or re.sub(r"\\(.)", r"\1", quoted)
            for quoted, bare in re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', line)]


def test_systemd_reads_back_the_command_line_and_environment_the_unit_writes(monkeypatch):
    """Words holding what a unit file treats specially (a space, quotes, a backslash, a %
    specifier, a lone ;): the command line systemd reads from the unit is the process's own,
    word for word, and so is its environment (where a $ is a $). A $ on a command line is
    systemd's variable, replaced only when PID 1 starts the process: the e2e test checks that.
    (The odd words come in through the hosts' addresses; systemd refuses quotes and
    backslashes in an executable's path, the cluster environment's fixed one.)"""
    odd = "it's a \"q\" \\ %n %%"
    on_node(monkeypatch, "ENV_LINK", "/opt/odd dir %n %%/{cluster}/current")
    on_node(monkeypatch, "DASK_CONFIG", odd + " $HOME $$X/{cluster}/dask")
    sched = Host("lab1", "198.18.0.11", "scheduler", private_address=odd)
    for proc in (RemoteProcess(sched, "scheduler", sched, DaskSettings(cluster="lab")),
                 RemoteProcess(Host("lab2", "198.18.0.12", "worker", private_address=";"),
                               "worker", sched, DaskSettings(cluster="lab"))):
        assert odd in " ".join(proc.command())
        read = systemd_reads(proc.unit, proc.unit_text())
        assert read["ExecStart"] == [proc.command()], read["ExecStart"]
        assert read["Environment"] == [f"{k}={v}" for k, v in proc.environment().items()]
        guard, pre = read["ExecStartPre"]
        assert guard == [METADATA_GUARD] and pre[:2] == ["/bin/sh", "-c"], pre
        assert f"date -u '+--- %FT%TZ start {proc.name}'" in pre[2], pre
