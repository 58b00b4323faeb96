"""Signals and termination: SIGTERM raised as an exception in the main thread (so clean-up
runs, as for Ctrl-C), and a child process stopped the way it asks to be stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that clean-up code runs."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_sig, _frame):
        raise Terminated("SIGTERM")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def interrupt_gracefully(proc: subprocess.Popen, grace_s: float, say) -> tuple[str, str, str]:
    """Send ``proc`` (started in a session of its own, so the terminal's Ctrl-C reached only us)
    one SIGINT, the way Terraform asks to be stopped: it finishes the calls in flight and writes
    its state. Wait up to ``grace_s``; a second Ctrl-C meanwhile is passed on (Terraform then
    stops at once), and past the grace period the process is killed. Returns (stdout, stderr,
    how it ended): "finished" (by itself, after the one interrupt), "stopped" (at once, on the
    second) or "killed"."""
    proc.send_signal(signal.SIGINT)
    program = os.fsdecode(proc.args if isinstance(proc.args, str | bytes | os.PathLike)
                          else proc.args[0])
    say(f"interrupted: letting {program} finish what it is doing and save its state "
        f"(up to {grace_s:.0f}s; Ctrl-C again stops it at once)")
    try:
        out, err = proc.communicate(timeout=grace_s)
        return out, err, "finished"
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
            return out, err, "stopped"
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            pass
    except subprocess.TimeoutExpired:
        pass
    proc.kill()
    out, err = proc.communicate()
    return out, err, "killed"
