"""Two labs on one machine (DASKFLEET_LAB_INDEX): nothing one makes or sweeps is the other's,
and the full tier's split between them keeps the emulated EC2 in lab 0."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner.errors import LabError
from runner.lab.addresses import lab_index

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import run_full_tier  # noqa: E402

NAMES = ("BRIDGE", "SUBNET_PREFIX", "NETNS_PREFIX", "VETH_PREFIX", "STATE_DIR", "CUT_TABLE",
         "OBJECT_STORE", "OBJECT_STORE_NETNS")


def names_of(index: str) -> dict:
    code = ("import json; from runner.lab import addresses as a, machine as m, objectstore as o;"
            f"d = {{n: getattr(a, n) for n in {NAMES!r}}};"
            "d.update(mac=m.BRIDGE_MAC, state=str(m.DEFAULT_STATE_DIR), link=o.LINK);"
            "print(json.dumps(d))")
    out = subprocess.run([sys.executable, "-c", code], env={"DASKFLEET_LAB_INDEX": index,
                         "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_lab_0_keeps_its_names_and_lab_1_shares_none_of_them():
    zero, one = names_of("0"), names_of("1")
    assert zero["BRIDGE"] == "dflab0" and zero["SUBNET_PREFIX"] == "198.18.0."
    assert zero["NETNS_PREFIX"] == "dflab-" and zero["state"] == "/var/lib/daskfleet-lab"
    assert one["SUBNET_PREFIX"] == "198.18.1." and one["OBJECT_STORE"] == "198.18.1.5"
    for key in zero:
        assert zero[key] != one[key], key
    # a sweep by prefix (`lab down`) of one lab never matches the other's names
    assert not one["NETNS_PREFIX"].startswith(zero["NETNS_PREFIX"])
    assert not one["VETH_PREFIX"].startswith(zero["VETH_PREFIX"])
    assert not one["link"].startswith(("dfe", zero["VETH_PREFIX"]))  # nor the cloud's links


@pytest.mark.parametrize("raw", ["x", "-1", "10", "1.5"])
def test_a_bad_index_is_refused_with_its_name(raw):
    with pytest.raises(LabError, match=f"DASKFLEET_LAB_INDEX='{raw}'"):
        lab_index({"DASKFLEET_LAB_INDEX": raw})


def test_the_lab_index_defaults_to_0():
    assert lab_index({}) == 0 and lab_index({"DASKFLEET_LAB_INDEX": "3"}) == 3


def test_the_full_tier_runs_every_module_once_and_the_emulated_ec2_in_lab_0_only():
    zero = run_full_tier.session_args(0, ["pytest", "-q"])
    assert zero[-1] == "tests" and "-q" not in zero
    temps = {a for a in zero if a.startswith("--basetemp=")}
    seen: list[str] = []
    for index, moved in run_full_tier.MOVED.items():
        args = run_full_tier.session_args(index, ["pytest", "-q"])
        assert args[:2] == ["pytest", "-v"] and "-q" not in args
        temps |= {a for a in args if a.startswith("--basetemp=")}
        for module in moved:
            assert f"--ignore={module}" in zero and module in args
            text = (REPO / module).read_text()
            assert "--cloud" not in text and "aws" not in Path(module).name, module
        seen += moved
    assert len(seen) == len(set(seen))  # no module runs in two labs
    assert len(temps) == len(run_full_tier.LABS)


def test_the_emulated_ec2_is_refused_outside_lab_0_before_anything_is_made(tmp_path):
    code = ("from runner.lab import Lab; from runner.errors import LabError\n"
            f"lab = Lab({str(tmp_path / 'lab')!r})\n"
            "try:\n    lab.up(cloud='aws')\nexcept LabError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], env={"DASKFLEET_LAB_INDEX": "1",
                         "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True)
    assert "the emulated EC2 runs in lab 0 only" in out.stdout and "lab 1" in out.stdout, out
    assert not (tmp_path / "lab").exists()


def test_the_full_tier_fails_when_any_session_fails_and_names_each(tmp_path, capsys):
    fake = tmp_path / "fake_pytest.py"  # stands in for pytest: lab 1's session fails
    fake.write_text("import os, sys\ni = os.environ['DASKFLEET_LAB_INDEX']\n"
                    "print('1 failed' if i == '1' else '3 passed')\n"
                    "sys.exit(1 if i == '1' else 0)\n")
    assert run_full_tier.main([sys.executable, str(fake)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^\[lab 0 \d\d:\d\d:\d\d\] 3 passed$", out, re.M), out
    assert re.search(r"^\[lab 1 \d\d:\d\d:\d\d\] 1 failed$", out, re.M), out
    assert "lab 0 exited 0: 3 passed" in out and "lab 1 exited 1: 1 failed" in out, out
    assert "lab 2 exited 0: 3 passed" in out, out


def test_lab_down_outside_lab_0_leaves_the_emulated_ec2_and_its_vpc_table_alone(tmp_path):
    code = ("import runner.lab.machine as m; calls = []\n"
            "m.run = lambda args, **kw: calls.append(args)\n"
            "from runner.lab.ec2 import stop_cloud\n"
            "class FakeLab:\n    state_dir = None\n"
            "    def read_record(self): return {'cloud': {}}\n"
            "print(stop_cloud(FakeLab()), calls)\n")
    run = lambda index: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], env={"DASKFLEET_LAB_INDEX": index, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, check=True).stdout
    assert run("1").strip() == "False []"
    assert "daskfleet_vpc" in run("0")  # lab 0's does remove it
