"""Run-folder files: written to a temporary name in the same folder, then renamed.

Control side, standard library only. A reader (or a crash) never sees half a file: either the old
state, or the whole new file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from runner.log import Progress, Say

logger = logging.getLogger(__name__)

STATUS_FILE = "status.json"
SUCCESS_FILES = ("model.joblib", "metrics.json", "report.html")


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` for a temporary sibling of ``path``, then rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, default=str) + "\n")


def copy_atomic(src: Path, dest: Path) -> None:
    write_atomic(dest, lambda tmp: shutil.copyfile(src, tmp))


def read_status(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


class RunLog(Say):
    """Progress lines of a run: appended to ``logs/run.log`` of the run, and passed on to
    ``say`` (warnings as warnings, when it tells them apart)."""

    def __init__(self, path: Path, say: Progress, earlier: Iterable[str] = ()):
        super().__init__(say, logger, record=self._append)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = list(earlier)
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in self.lines)

    def _append(self, line: str) -> None:
        self.lines.append(line)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def interruption(error: BaseException) -> str | None:
    """The message of a run cancelled on the control machine (Ctrl-C, or SIGTERM raised as a
    KeyboardInterrupt whose text is "SIGTERM"), or None for any other error."""
    if not isinstance(error, KeyboardInterrupt):
        return None
    return f"cancelled: interrupted on the control machine ({str(error) or 'SIGINT'})"


def write_failed_run(run_dir: Path, status: dict, error: BaseException, log_lines=()) -> None:
    """A run that failed (or was cancelled) before it reached the cluster: status.json and
    logs/run.log only."""
    run_dir = Path(run_dir)
    tmp = run_dir.with_name(run_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "logs").mkdir(parents=True)
    try:
        cancelled = interruption(error)
        lines = [*log_lines, cancelled or f"failed: {error}"]
        (tmp / "logs" / "run.log").write_text("".join(line + "\n" for line in lines))
        write_json_atomic(tmp / STATUS_FILE, {**status, "status": "cancelled" if cancelled
                                              else "failed", "error": cancelled or str(error)})
        tmp.rename(run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
