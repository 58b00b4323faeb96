"""Helpers of the bad-input suites (tests/unit/test_bad_input_*.py, tests/batch/test_bad_*.py):
run a command the way a user does, and prove that it changed nothing on disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from runner.cli import main


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: relative path -> (mtime_ns, sha256), folders included."""
    out: dict[str, tuple[int, str]] = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_dir():
            out[rel + "/"] = (0, "")
        else:
            out[rel] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def leftovers(root: Path) -> list[str]:
    """Half-written artifacts: temp files and folders (``*.tmp``, ``.*.tmp-<pid>``) under root."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                  if ".tmp" in p.name)


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    lines: list[str] = field(default_factory=list)


def run_cli(argv: list[str], capsys) -> Outcome:
    """`daskfleet ARGV` in this process: exit status, stdout and stderr."""
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def assert_clear_error(outcome: Outcome, code: int, names: tuple[str, ...], todo: str) -> None:
    """Exit ``code``; one message on stderr that names each of ``names`` (file, key, host) and
    says what to do (``todo``), and no traceback."""
    assert outcome.code == code, (outcome.code, outcome.err, outcome.out)
    assert outcome.err.startswith("daskfleet: error: "), outcome.err
    for name in names:
        assert name in outcome.err, f"{name!r} not named in: {outcome.err}"
    assert todo in outcome.err, f"no {todo!r} (what to do) in: {outcome.err}"
    assert "Traceback" not in outcome.err + outcome.out
