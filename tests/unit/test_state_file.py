"""state.json: written whole (temp file, fsync, rename), and a damaged one is an error that names
the file and what still works, never a traceback; the next write keeps the damaged copy."""

from __future__ import annotations

import json

import pytest

from runner import state
from runner.errors import StateError


@pytest.mark.parametrize("content", ['{"hosts": [', "[1, 2]", ""])
def test_a_damaged_state_file_is_a_clear_error(tmp_path, content):
    (tmp_path / "state.json").write_text(content)
    with pytest.raises(StateError) as e:
        state.read(tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "state.json") in msg and "is damaged" in msg
    assert "`daskfleet down` still works" in msg and ".damaged`" in msg


def test_a_write_keeps_the_damaged_file_aside_and_starts_anew(tmp_path):
    (tmp_path / "state.json").write_text('{"hosts": [')
    assert state.update(tmp_path, pids={}) == {"pids": {}}
    assert json.loads((tmp_path / "state.json").read_text()) == {"pids": {}}
    assert (tmp_path / "state.json.damaged").read_text() == '{"hosts": ['
    assert not list(tmp_path.glob(".state.*.tmp"))


def test_a_write_merges_and_leaves_no_temp_file(tmp_path):
    state.update(tmp_path, a=1)
    state.update(tmp_path, b=2)
    assert state.read(tmp_path) == {"a": 1, "b": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    state.update(tmp_path, a=1)

    def no_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "fsync", no_disk)
    with pytest.raises(OSError, match="No space"):
        state.update(tmp_path, a=2)
    assert state.read(tmp_path) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
