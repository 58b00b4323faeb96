"""The supervisor's systemd unit, as the playbook installs it where systemd runs the machine, is
one systemd itself accepts (the fast tier's check; tests/e2e/test_14_units_under_systemd.py
runs it under systemd)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FILES = Path(__file__).resolve().parents[2] / "playbooks/roles/dask_node/files"


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` of the unit with its ExecStart pointed at a copy of the script
    (the installed path does not exist on this machine)."""
    script = tmp_path / "daskfleet-supervise"
    shutil.copy(FILES / "daskfleet-supervise", script)
    script.chmod(0o755)
    text = unit_text.replace("/usr/local/lib/daskfleet-supervise", str(script))
    return verify_units({"daskfleet-supervise.service": text}, tmp_path)


def verify_units(units: dict[str, str], folder: Path) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` of several units (name: text) written into FOLDER."""
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze not found: install the systemd package (Debian: apt install systemd)"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (folder / name).write_text(text)
    return subprocess.run([tool, "verify", "--man=no", *(str(folder / n) for n in units)],
                          capture_output=True, text=True, timeout=60)


def test_the_supervisor_unit_is_valid(tmp_path):
    text = (FILES / "daskfleet-supervise.service").read_text()
    assert "ExecStart=/usr/local/lib/daskfleet-supervise\n" in text
    done = verify(text, tmp_path)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_a_unit_systemd_would_ignore_a_line_of_fails_the_check(tmp_path):
    # what the check above catches: systemd only warns and ignores a bad setting
    text = (FILES / "daskfleet-supervise.service").read_text()
    done = verify(text.replace("KillMode=process", "KillMode=procss"), tmp_path)
    assert "Failed to parse kill mode" in done.stderr
