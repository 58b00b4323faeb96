"""playbooks/library/daskfleet_dirs.py: the roles' folders in one module run, each as
``file: state=directory`` makes it; check mode changes nothing. (The e2e converges run it on the
lab hosts: test_2's hand-run playbook asserts that a second run changes nothing.)"""

from __future__ import annotations

import importlib.util
import os
import pwd
import stat
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "playbooks" / "library" / "daskfleet_dirs.py"
spec = importlib.util.spec_from_file_location("daskfleet_dirs", MODULE)
assert spec and spec.loader
dirs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dirs)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing a folder's owner needs root")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_missing_folder_and_its_parents_are_made_with_the_mode_asked(tmp_path):
    target = tmp_path / "a" / "b"
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert dirs.ensure({"path": str(target), "mode": "0750", "owner": me}, check=False) == ["made"]
    assert target.is_dir() and _mode(target) == 0o750
    assert _mode(tmp_path / "a") == 0o755 & ~_umask()  # a parent, as file: makes it
    # the second time nothing changes
    assert dirs.ensure({"path": str(target), "mode": "0750", "owner": me}, check=False) == []


def test_check_mode_reports_and_changes_nothing(tmp_path):
    me = pwd.getpwuid(os.geteuid()).pw_name
    missing = tmp_path / "missing"
    assert dirs.ensure({"path": str(missing), "mode": "0700", "owner": me}, check=True) == ["made"]
    assert not missing.exists()
    tmp_path.joinpath("present").mkdir(mode=0o755)
    present = tmp_path / "present"
    assert dirs.ensure({"path": str(present), "mode": "0700", "owner": me}, check=True) == ["mode"]
    assert _mode(present) == 0o755 & ~_umask()


@as_root
def test_owner_and_group_are_set_and_a_group_not_given_is_kept(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    os.chown(folder, 0, 0)
    changes = dirs.ensure({"path": str(folder), "mode": "0700", "owner": "nobody"}, check=False)
    assert changes == ["owner", "mode"]
    st = folder.stat()
    assert (st.st_uid, st.st_gid) == (pwd.getpwnam("nobody").pw_uid, 0)  # group kept: root's
    assert dirs.ensure({"path": str(folder), "mode": "0700", "owner": "nobody",
                        "group": "nogroup"}, check=False) == ["owner"]
    assert folder.stat().st_gid != 0


@pytest.mark.parametrize("item, says", [
    ({"mode": "0700", "owner": "no-such-user-x"}, "owner 'no-such-user-x' is not a user"),
    ({"mode": "0700", "group": "no-such-group-x"}, "group 'no-such-group-x' is not a group"),
    ({"mode": "rwx"}, "mode 'rwx' is not an octal mode"),
])
def test_bad_input_names_the_folder_and_what_is_wrong(tmp_path, item, says):
    me = pwd.getpwuid(os.geteuid()).pw_name
    with pytest.raises(ValueError, match=says) as err:
        dirs.ensure({"path": str(tmp_path / "x"), "owner": me, **item}, check=False)
    assert str(tmp_path / "x") in str(err.value)
    assert not (tmp_path / "x").exists()  # nothing made before the refusal


def test_a_file_where_a_folder_should_be_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    me = pwd.getpwuid(os.geteuid()).pw_name
    with pytest.raises(ValueError, match="exists and is not a folder"):
        dirs.ensure({"path": str(tmp_path / "f"), "mode": "0700", "owner": me}, check=False)


@pytest.mark.parametrize("check", [False, True])
def test_a_symlink_where_a_folder_should_be_is_refused_and_its_target_left_alone(tmp_path, check):
    """The cluster's user owns the folder holding `work` and `pycache`: a link put there in
    place of one must not hand the next converge's owner and mode to what it points at."""
    target = tmp_path / "etc"
    target.mkdir(mode=0o755)
    before = target.stat()
    (tmp_path / "work").symlink_to(target)
    with pytest.raises(ValueError, match="work exists and is a symlink"):
        dirs.ensure({"path": str(tmp_path / "work"), "mode": "0700", "owner": "nobody"},
                    check=check)
    after = target.stat()
    assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
