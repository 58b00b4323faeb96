"""The units a lab host boots with (its boot step, its sshd, an instance's power unit) are ones
systemd itself accepts, and the host masks this machine's own enabled units. The fast tier's
check: every e2e test boots them (tests/e2e/test_2_operations.py looks at a rebooted host,
tests/e2e/test_5_aws_emulated.py reboots an instance from inside)."""

from __future__ import annotations

from pathlib import Path

from test_supervisor_unit import verify_units

from runner.lab.boot_scripts import INIT_UNIT, POWER_UNIT, SSHD_UNIT, lab_units
from runner.lab.machine import BootSpec, _write_units


def spec(hdir: Path, **kw) -> BootSpec:
    return BootSpec(hostname="lab9", address="198.18.0.99", netns="dflab-lab9", veth="dfv-lab9",
                    mac="02:df:00:00:00:63", hdir=hdir, host_keys=(str(hdir / "key"),),
                    user="root", **kw)


def test_the_lab_units_are_valid_and_an_instance_gets_the_power_unit(tmp_path):
    (tmp_path / "sshd_config").write_text("")
    for power in (False, True):
        units = lab_units(spec(tmp_path, power_unit=power), tmp_path / "init.sh",
                          tmp_path / "sshd_config")
        assert (POWER_UNIT in units) is power
        done = verify_units(units, tmp_path / f"units-{power}")
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    # the power unit tells a reboot from a power-off as the host goes down
    stop = next(line for line in units[POWER_UNIT].splitlines() if line.startswith("ExecStop="))
    assert "reboot.target" in stop and "reboot-requested" in stop and "shutdown-requested" in stop


def test_a_host_masks_this_machines_enabled_units_and_enables_its_own(tmp_path):
    (tmp_path / "etc-upper").mkdir()
    _write_units(spec(tmp_path), tmp_path / "sshd_config")
    system = tmp_path / "etc-upper" / "systemd" / "system"
    for name in (INIT_UNIT, SSHD_UNIT):
        assert (system / "multi-user.target.wants" / name).is_symlink()
    enabled = {p.name for p in Path("/etc/systemd/system").glob("*.wants/*")}
    for name in enabled | {"ssh.service"}:
        assert (system / name).readlink() == Path("/dev/null"), name
    assert (tmp_path / "etc-upper" / "hostname").read_text() == "lab9\n"


def test_a_host_sees_its_own_boot_files_of_the_labs_folder_only(tmp_path):
    from runner.lab.boot_scripts import nspawn_args

    hdir = tmp_path / "lab" / "hosts" / "lab9"
    args = nspawn_args(spec(hdir, shared_ro=("/images",)), "/root-bind")
    assert f"--tmpfs={tmp_path / 'lab'}:mode=0700" in args
    assert f"--bind-ro={hdir}" in args and "--bind-ro=/images" in args
    assert "--volatile=overlay" in args and f"--overlay=/etc:{hdir / 'etc-upper'}:/etc" in args
    # the playbook's scripts in /usr/local outlive a reboot, as on a real disk
    assert f"--overlay=/usr/local:{hdir / 'usr-local-upper'}:/usr/local" in args
