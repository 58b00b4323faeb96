"""A pid file names one process only: the recorded pid, with the start time recorded with it,
running our own command line (kind, the cluster's scheduler address, the worker's name)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runner.cluster import processes
from runner.cluster.hosts import Host
from runner.cluster.processes import START_TIME, DaskSettings, RemoteProcess

SCHED = Host("lab1", "198.18.0.11", "scheduler")
WORKER = RemoteProcess(Host("lab2", "198.18.0.12", "worker"), "worker", SCHED,
                       DaskSettings(cluster="lab"))


def check(proc: RemoteProcess) -> int:
    return subprocess.run(["sh", "-c", proc._ours() + "echo ours"]).returncode


@pytest.fixture
def fake_worker(tmp_path, monkeypatch):
    """A process whose command line is the worker's (as `dask worker ...` would show it)."""
    monkeypatch.setattr(processes, "RUN_DIR", str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                          *WORKER.command()[1:]])
    yield p
    p.kill()
    p.wait()


def start_time(pid: int) -> str:
    return subprocess.run(["sh", "-c", START_TIME.replace("$pid", str(pid))], capture_output=True,
                          text=True).stdout.strip()


def test_the_recorded_process_is_ours(fake_worker, tmp_path):
    (tmp_path / "lab-lab2-w0.pid").write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    assert check(WORKER) == 0


def test_a_reused_pid_with_another_start_time_is_not_ours(fake_worker, tmp_path):
    (tmp_path / "lab-lab2-w0.pid").write_text(f"{fake_worker.pid} 1\n")
    assert check(WORKER) == 4


def test_another_clusters_worker_of_the_same_name_is_not_ours(fake_worker, tmp_path):
    other = RemoteProcess(WORKER.host, "worker", SCHED, DaskSettings(cluster="lab",
                                                                     scheduler_port=8796))
    (tmp_path / "lab-lab2-w0.pid").write_text(f"{fake_worker.pid} {start_time(fake_worker.pid)}\n")
    assert other.name == WORKER.name and check(other) == 4
    assert "--name lab2-w1 " not in WORKER.identity  # lab2-w1 never matches lab2-w10


def test_a_missing_pid_file_is_not_running(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "RUN_DIR", str(tmp_path))
    assert check(WORKER) == 3
