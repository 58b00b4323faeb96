"""The detached runs' queue on the scheduler's host (runner.jobs.driver): who is ahead, what a
run's status is, and a driver that died is reported lost, never waited for."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.jobs import driver


@pytest.fixture
def sleepers():
    procs = []

    def start(folder: Path) -> int:
        # a process whose command line is a driver's of this folder, as `driver_alive` reads it
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m",
                              driver.MODULE, str(folder)])
        procs.append(p)
        _exec_done(p.pid)
        return p.pid

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _exec_done(pid: int) -> None:
    """Until the child's command line is its own (a real driver writes its state itself, from
    within: by then it is; here the test writes it, right after starting the child)."""
    deadline = time.monotonic() + 10
    while driver.MODULE.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _run(root: Path, name: str, queued_at: float, pid: int | None, status="queued",
         result: str | None = None) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / driver.REQUEST).write_text("{}")
    if pid is not None:
        (folder / driver.STATE).write_text(json.dumps({"status": status, "pid": pid,
                                                       "queued_at": queued_at}))
    if result:
        (folder / driver.RESULT).mkdir()
        (folder / driver.RESULT / "status.json").write_text(json.dumps({"status": result}))
    return folder


def test_the_queue_is_in_the_order_the_drivers_queued_not_by_name(tmp_path, sleepers):
    a = _run(tmp_path, "zzz", 1.0, None)
    sleepers_a = sleepers(a)
    (a / driver.STATE).write_text(json.dumps({"status": "running", "pid": sleepers_a,
                                              "queued_at": 1.0}))
    b = _run(tmp_path, "aaa", 2.0, None)
    (b / driver.STATE).write_text(json.dumps({"status": "queued", "pid": sleepers(b),
                                              "queued_at": 2.0}))
    c = _run(tmp_path, "mmm", 3.0, None)
    (c / driver.STATE).write_text(json.dumps({"status": "queued", "pid": sleepers(c),
                                              "queued_at": 3.0}))
    assert driver.ahead_of(c) == ["zzz", "aaa"]
    assert driver.ahead_of(b) == ["zzz"]
    assert driver.ahead_of(a) == []
    assert driver.describe(c) == {"status": "queued", "final": False,
                                  "pid": json.loads((c / driver.STATE).read_text())["pid"],
                                  "ahead": ["zzz", "aaa"]}


def test_finished_and_dead_runs_are_not_ahead(tmp_path, sleepers):
    _run(tmp_path, "done", 1.0, 999_999, result="succeeded")
    dead = _run(tmp_path, "dead", 2.0, 999_998)  # no such process: its driver died
    # a live process that is not this folder's driver (a reused pid) does not count either
    other = sleepers(tmp_path / "elsewhere")
    _run(tmp_path, "stranger", 2.5, other)
    me = _run(tmp_path, "me", 3.0, None)
    (me / driver.STATE).write_text(json.dumps({"status": "queued", "pid": sleepers(me),
                                               "queued_at": 3.0}))
    assert driver.ahead_of(me) == []
    assert driver.describe(dead) == {"status": "lost", "final": True}
    assert driver.describe(tmp_path / "done") == {"status": "succeeded", "final": True}


def test_a_run_whose_driver_has_not_written_its_state_yet_is_starting(tmp_path):
    young = _run(tmp_path, "young", 0, None)
    assert driver.describe(young) == {"status": "starting", "final": False}


def test_cancel_stops_the_driver_of_this_run_only(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m",
                             driver.MODULE, str(folder)], start_new_session=True)
    _exec_done(proc.pid)
    try:
        (folder / driver.STATE).write_text(json.dumps({"status": "running", "pid": proc.pid,
                                                       "queued_at": time.time()}))
        assert driver.cancel(folder, grace_s=5) == "cancelled"
        assert proc.wait(timeout=5) != 0
        assert driver.cancel(folder) == "not running"
    finally:
        proc.kill()


def test_a_run_id_given_by_hand_is_checked_before_any_path_or_command_is_made_of_it(tmp_path):
    from runner.errors import BatchError
    from runner.jobs.detached import locate
    from runner.jobs.submit import new_run_id

    for bad in ("..", "x;rm -rf /", "20261202-040538-long-9f35/../../etc"):
        with pytest.raises(BatchError, match="is not a run id"):
            locate(tmp_path, bad, "clusters/lab.yaml")
    with pytest.raises(BatchError, match="no such run"):  # a well-formed id goes on
        locate(tmp_path, new_run_id("job"))
