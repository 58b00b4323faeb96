"""`lab up` without root, ip or sshd says so in one line, and the CLI exits non-zero."""

from __future__ import annotations

import pytest

from runner.cli import main
from runner.errors import LabError
from runner.lab import lab as labmod


def test_without_root_the_lab_says_so_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(labmod.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        labmod.check_prerequisites()
    assert main(["lab", "up", "--hosts", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("daskfleet: error: lab: needs root") and "\n" not in err


def test_missing_ip_and_sshd_are_named_with_the_install_command(monkeypatch):
    monkeypatch.setattr(labmod.os, "geteuid", lambda: 0)
    monkeypatch.setattr(labmod.shutil, "which", lambda tool: None if tool == "ip" else "/bin/x")
    monkeypatch.setattr(labmod.os, "access", lambda path, mode: False)
    with pytest.raises(LabError) as e:
        labmod.check_prerequisites()
    msg = str(e.value)
    assert "missing ip, /usr/sbin/sshd" in msg and "apt-get install" in msg


def test_host_count_is_bounded(monkeypatch):
    monkeypatch.setattr(labmod, "check_prerequisites", lambda: None)
    with pytest.raises(LabError, match="between 1 and 32"):
        labmod.Lab("/nonexistent-lab-dir").up(0)
