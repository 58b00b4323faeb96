"""The record of a cluster under .daskfleet/<cluster>/: what daskfleet created and started, and
the lock that serializes the commands changing it."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from runner.errors import DaskfleetError, StateError
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

# Within one process, state.json's read-modify-write is serialized here; across processes by
# the cluster lock below, which every command that changes the cluster holds.
_guard = threading.Lock()


def read(state_dir: Path) -> dict:
    """state.json as a dict ({} before the first `up`); a damaged file is a StateError that names
    it and says what still works."""
    path = state_dir / "state.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except ValueError as e:
        data, why = None, f"not JSON: {e}"
    else:
        why = f"a JSON {type(data).__name__}, not an object"
    if not isinstance(data, dict):
        raise StateError(
            f"{path} is damaged ({why}). `daskfleet down` still works: it reads the hosts from "
            f"Terraform's state ({state_dir / 'terraform'}). To bring the cluster up again, move "
            f"the file aside (`mv {path} {path}.damaged`) and run `daskfleet up`, which records "
            "the cluster anew.", path=path)
    return data


def update(state_dir: Path, **changes) -> dict:
    """Merge changes into state.json, written to a temp file of its own, flushed to disk and
    renamed (never half-written, even across a power cut, and two writers never share a temp
    file). A damaged state.json is kept beside it as state.json.damaged and replaced."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with _guard:
        try:
            old = read(state_dir)
        except StateError as e:
            os.replace(e.path, e.path.with_name(e.path.name + ".damaged"))
            old = {}
        data = {**old, **changes}
        fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=state_dir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, state_dir / "state.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(state_dir)  # the rename itself survives a crash
    return data


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(state_dir: Path, what: str, wait: float = 600.0,
           progress: Progress | None = None) -> Iterator[None]:
    """Hold the cluster's lock (.daskfleet/<cluster>/lock) for a command that changes it. A
    second such command waits, saying who holds the lock, and gives up after `wait` seconds."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "lock"
    with open(path, "a+") as f:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another daskfleet command"
                if time.monotonic() > deadline:
                    raise DaskfleetError(
                        f"{state_dir.name}: {holder} still holds the cluster's lock ({path}) after "
                        f"{wait:.0f}s; wait for it to finish, or stop it, and run `{what}` again."
                    ) from None
                if not told:
                    Say(progress, logger)(f"waiting: {holder} holds the cluster's lock ({path})")
                    told = True
                time.sleep(0.5)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} (`{what}`, {shlex.join(sys.argv[1:]) or '-'}) since "
                f"{datetime.now(UTC).isoformat(timespec='seconds')}\n")
        f.flush()
        logger.debug(f"holding the cluster's lock {path} for `{what}`")
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
