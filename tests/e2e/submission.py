"""`daskfleet submit` run in the background by the e2e tests, its output lines timed as they come
(imported by the tests of this folder)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


class Submission:
    """`daskfleet submit` in the background, its output lines timed as they come."""

    def __init__(self, cli, job: Path, runs_dir: Path, cluster: Path):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner.cli", "submit", str(job), "-c", str(cluster),
             "--runs-dir", str(runs_dir)], cwd=cli.workdir, env=cli.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[tuple[float, str]] = []
        self.err = ""
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._seen.notify_all()

    def _read_err(self) -> None:
        self.err = self.proc.stderr.read()

    @property
    def out(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_for(self, text: str, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        with self._seen:
            while not any(text in line for _, line in self.lines):
                if self.proc.poll() is not None and not self._reader.is_alive():
                    pytest.fail(f"submit ended before {text!r}:\n{self.out}\n{self.err}")
                if time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.fail(f"no {text!r} within {timeout}s:\n{self.out}\n{self.err}")
                self._seen.wait(1)
        return time.monotonic()

    @property
    def run_id(self) -> str:
        """The run's id, from submit's first line (`run ID: job NAME on cluster NAME`)."""
        self.wait_for(": job ")
        line = next(line for _, line in self.lines if ": job " in line)
        return line.split("run ", 1)[1].split(":", 1)[0]

    def finish(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"submit still running {timeout:.0f}s later (a hang):\n{self.out}")
        self._reader.join(10)
        self._err_reader.join(10)
        self.ended = time.monotonic()
        return rc
