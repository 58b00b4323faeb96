"""Ctrl-C or SIGTERM during `terraform apply`: Terraform gets one interrupt (the terminal's
reaches only daskfleet), is given time to finish what it is doing and write its state, and the
command then says what the state holds and what to run. Run for real with a stand-in
`terraform` (a shell script on PATH) in a process of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_TERRAFORM = """#!/bin/bash
# stand-in: `state list` lists one instance; anything else runs until interrupted, then takes a
# moment to "write its state" and exits 1, as Terraform does after an interrupt
case "$1" in
  state) echo 'module.cluster.aws_instance.this["w1"]'; exit 0;;
esac
trap 'echo INT >> signals.log; sleep 1; echo saved > state.saved; exit 1' INT
echo $$ > terraform.pid
echo creating > started
while true; do sleep 0.1; done
"""

DRIVER = """
import sys
from pathlib import Path
from runner.errors import ProvisionError
from runner.provision import terraform
from runner.signals import sigterm_raises
def say(message):  # printed, and logged where the test can wait for it
    print(message, flush=True)
    with open(Path(sys.argv[1]) / "said.log", "a") as f:
        f.write(message + "\\n")
with sigterm_raises():
    try:
        terraform._tf(Path(sys.argv[1]), "apply", what="apply", say=say)
    except ProvisionError as e:
        print("ERROR", e, flush=True)
        sys.exit(3)
"""


@pytest.fixture
def apply_with():
    """``apply_with(tmp_path, fake)``: see ``_apply_with``. Whatever the test's outcome, each
    group it started is killed at its end: a stand-in Terraform that was never told to stop
    would otherwise run on forever, orphaned."""
    started: list[subprocess.Popen] = []

    def start(tmp_path: Path, fake: str) -> tuple[subprocess.Popen, Path]:
        proc, work = _apply_with(tmp_path, fake)
        started.append(proc)
        return proc, work

    yield start
    for proc in started:
        # daskfleet's group, then the stand-in, which runs in a session of its own (as
        # Terraform does: the terminal's Ctrl-C reaches only daskfleet)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pid_file = Path(proc.args[-1]) / "terraform.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _apply_with(tmp_path: Path, fake: str) -> tuple[subprocess.Popen, Path]:
    """daskfleet's `terraform apply` (DRIVER) with ``fake`` as `terraform` on PATH, in a group
    of its own as a command in a terminal (the signal goes to the whole group); its working
    folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "terraform").write_text(fake)
    (bin_dir / "terraform").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    # SIGINT as a terminal's command has it: a run started in the background by a shell
    # without job control (`make check &`) inherits it ignored, and nothing could trap it
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(work)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, work


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_an_interrupted_apply_lets_terraform_save_its_state(tmp_path, sig, apply_with):
    proc, work = apply_with(tmp_path, FAKE_TERRAFORM)
    deadline = time.monotonic() + 30
    while not (work / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    # exactly one interrupt reached Terraform (two would make it stop without saving)
    assert (work / "signals.log").read_text() == "INT\n", out
    assert (work / "state.saved").exists(), out
    assert "letting" in out and "finish what it is doing and save its state" in out
    assert "terraform apply interrupted: it finished the calls in flight and saved its state" in out
    assert 'holds 1 resource(s): module.cluster.aws_instance.this["w1"]' in out
    assert "Run the same command again" in out and "down --destroy" in out


# A Terraform still saving when the user presses Ctrl-C again: it stops at once on the second.
SLOW_TERRAFORM = f"""#!{sys.executable}
import os, signal, sys, time
from pathlib import Path
if sys.argv[1:2] == ["state"]:
    print('module.cluster.aws_instance.this["w1"]')
    sys.exit(0)
seen = []
def interrupted(*_):
    seen.append(1)
    with open("signals.log", "a") as f:
        f.write("INT\\n")
    if len(seen) > 1:
        sys.exit(1)  # the second: at once, the state not saved
signal.signal(signal.SIGINT, interrupted)
Path("terraform.pid").write_text(str(os.getpid()))
Path("started").write_text("creating")
while True:
    time.sleep(0.1)  # "saving its state" for longer than the test waits
"""


def test_a_second_ctrl_c_stops_terraform_at_once_and_says_the_state_may_miss_resources(
        tmp_path, apply_with):
    proc, work = apply_with(tmp_path, SLOW_TERRAFORM)
    signals_log = work / "signals.log"
    said = work / "said.log"
    for n in (1, 2):  # Ctrl-C, and again once Terraform and daskfleet have both had the first
        deadline = time.monotonic() + 30
        # (two signals before Python's handler runs would reach daskfleet's as one)
        ready = (lambda: (work / "started").exists()) if n == 1 else \
            (lambda: signals_log.exists() and signals_log.read_text() == "INT\n"
             and said.exists() and "interrupted: letting" in said.read_text())
        while not ready():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    assert signals_log.read_text() == "INT\nINT\n", out  # the second was passed on
    assert "a second Ctrl-C stopped it at once: resources being created may be missing" in out
    assert "saved its state" not in out.split("interrupted:", 2)[-1]
    assert 'holds 1 resource(s): module.cluster.aws_instance.this["w1"]' in out
