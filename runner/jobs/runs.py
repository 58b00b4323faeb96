"""The run history: ``runs/index.sqlite``, one row per submitted run (succeeded or failed).

The index is a cache of the run folders' ``status.json`` files: a row is (re)written from the
folder after each run, so the folders stay the truth and ``rebuild`` can recreate the index.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from runner.batch.artifacts import read_status
from runner.errors import BatchError

INDEX_NAME = "index.sqlite"
COLUMNS = ("id", "job", "status", "accuracy", "macro_f1", "duration_s", "n_workers", "started_at",
           "run_dir", "error", "results_url")
SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, job TEXT NOT NULL, status TEXT NOT NULL, accuracy REAL, macro_f1 REAL,
    duration_s REAL, n_workers INTEGER, started_at TEXT, run_dir TEXT NOT NULL, error TEXT,
    results_url TEXT)"""
# columns added after the first release: an older index gets them on first use
ADDED_COLUMNS = {"results_url": "TEXT"}


def index_path(runs_dir: Path) -> Path:
    return Path(runs_dir) / INDEX_NAME


@contextlib.contextmanager
def _connect(runs_dir: Path, create: bool) -> Iterator[sqlite3.Connection]:
    path = index_path(runs_dir)
    if not create and not path.is_file():
        raise BatchError(f"{path}: no run index (no run was submitted with --runs-dir {runs_dir})")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=10)
    except sqlite3.Error as e:
        raise BatchError(f"{path}: cannot open the run index: {e}") from e
    try:
        with conn:  # one transaction
            conn.execute(SCHEMA)
            have = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
            for name, kind in ADDED_COLUMNS.items():
                if name not in have:
                    conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            yield conn
    except sqlite3.Error as e:
        raise BatchError(f"{path}: run index error: {e}") from e
    finally:
        conn.close()


def record(runs_dir: Path, row: dict) -> None:
    """Insert or replace one run (keys: COLUMNS; missing ones are NULL)."""
    values = [row.get(c) for c in COLUMNS]
    if not values[0] or not row.get("job") or not row.get("status") or not row.get("run_dir"):
        raise BatchError(f"run index: a run needs id, job, status and run_dir, got {row!r}")
    with _connect(runs_dir, create=True) as conn:
        conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(COLUMNS))})", values)


def record_run_dir(runs_dir: Path, run_dir: Path) -> dict:
    """Index the run in ``run_dir`` from its status.json; returns the row."""
    status = read_status(run_dir)
    if status is None:
        raise BatchError(f"{run_dir}: no readable status.json; not a daskfleet run folder")
    row = {c: status.get(c) for c in COLUMNS}
    row["id"] = status.get("run_id") or Path(run_dir).name
    row["run_dir"] = str(run_dir)
    record(runs_dir, row)
    return row


def list_runs(runs_dir: Path) -> list[dict]:
    """Every indexed run, newest first."""
    with _connect(runs_dir, create=False) as conn:
        cur = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM runs ORDER BY started_at DESC, id DESC")
        return [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]


def get_run(runs_dir: Path, run_id: str) -> dict:
    """One run by id or by a unique id prefix."""
    with _connect(runs_dir, create=False) as conn:
        cur = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM runs WHERE id = ? OR id LIKE ? "
                           "ORDER BY id", (run_id, run_id.replace("%", "") + "%"))
        rows = [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]
    exact = [r for r in rows if r["id"] == run_id]
    if exact:
        return exact[0]
    if not rows:
        raise BatchError(f"{index_path(runs_dir)}: no run {run_id!r} (see `daskfleet runs`)")
    if len(rows) > 1:
        raise BatchError(f"run id prefix {run_id!r} is ambiguous: "
                         f"{', '.join(r['id'] for r in rows[:5])}")
    return rows[0]


def run_details(row: dict) -> dict:
    """The index row plus the run folder's metrics (when it succeeded), its files, and where
    each of them lives: ``artifacts`` maps a file's path in the folder to its local path and,
    for a run copied to a results store, its URL there."""
    run_dir = Path(row["run_dir"])
    files = sorted(p for p in run_dir.rglob("*") if p.is_file()) if run_dir.is_dir() else []
    details = {**row, "files": [str(p) for p in files], "artifacts": {}}
    for p in files:
        name = p.relative_to(run_dir).as_posix()
        details["artifacts"][name] = {"local": str(p)} | (
            {"copy": f"{row['results_url']}/{name}"} if row.get("results_url") else {})
    try:
        details["metrics"] = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        details["metrics"] = None
    return details
