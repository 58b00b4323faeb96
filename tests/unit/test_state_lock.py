"""Commands that change a cluster hold its lock: a second one waits, saying who holds it, and
state.json is never half-written by concurrent writers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from runner import state
from runner.errors import DaskfleetError

HOLD = """
import sys, time
from pathlib import Path
from runner import state
with state.locked(Path(sys.argv[1]), "daskfleet up"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_command_waits_then_names_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        said = []
        with pytest.raises(DaskfleetError) as e, state.locked(tmp_path, "daskfleet scale", wait=1,
                                                               progress=said.append):
            pass
        assert f"pid {holder.pid}" in str(e.value) and "daskfleet up" in str(e.value)
        assert "run `daskfleet scale` again" in str(e.value)
        assert said and f"pid {holder.pid}" in said[0]
    finally:
        holder.kill()
        holder.wait()
    with state.locked(tmp_path, "daskfleet scale", wait=5):  # free again once the holder died
        pass


def test_the_waiter_gets_the_lock_when_the_holder_finishes(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "1.5"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    t = time.monotonic()
    with state.locked(tmp_path, "daskfleet down", wait=30):
        waited = time.monotonic() - t
    holder.wait()
    assert waited > 0.5  # it did wait for the holder, rather than run alongside it


def test_concurrent_updates_lose_no_key_and_never_half_write(tmp_path):
    def write(i: int) -> None:
        for j in range(20):
            state.update(tmp_path, **{f"k{i}-{j}": j})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = json.loads((tmp_path / "state.json").read_text())
    assert len(data) == 160
    assert not list(tmp_path.glob("*.tmp"))
