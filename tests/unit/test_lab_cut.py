"""`lab cut` / `lab heal`: the nftables table that drops a host's traffic, and what status says."""

from __future__ import annotations

import json

import pytest

from runner.cli import parser
from runner.errors import LabError
from runner.lab import Lab
from runner.lab.cut import CUT_TABLE, cut_ruleset, has_cut_table
from runner.lab.machine import host_state
from runner.lab.security_groups import SG_TABLE


def test_the_cut_drops_both_ways_but_loopback_in_a_table_of_its_own():
    text = cut_ruleset()
    assert CUT_TABLE != SG_TABLE  # healing never touches the emulated security groups
    assert text.count("policy drop;") == 2
    assert "hook input" in text and "hook output" in text
    assert 'iif "lo" accept' in text and 'oif "lo" accept' in text
    # nothing else is let through: no established/related exception, no address
    assert "ct state" not in text and "saddr" not in text and "daddr" not in text
    # one atomic transaction: cutting a cut host replaces the table instead of failing
    assert text.startswith(f"table inet {CUT_TABLE}\ndelete table inet {CUT_TABLE}\n")


def test_a_cut_is_read_from_the_hosts_own_tables():
    assert has_cut_table(f"table inet {SG_TABLE}\ntable inet {CUT_TABLE}\n")
    assert not has_cut_table(f"table inet {SG_TABLE}\n")
    assert not has_cut_table(f"table inet {CUT_TABLE}_other\n")
    assert not has_cut_table("")


def test_status_words():
    assert host_state(up=True, cut=False) == "up"
    assert host_state(up=False, cut=False) == "DOWN"
    assert host_state(up=False, cut=True) == "CUT"


def test_cut_and_heal_are_commands():
    for verb in ("cut", "heal"):
        args = parser().parse_args(["lab", verb, "lab2"])
        assert args.lab_cmd == verb and args.host == "lab2"


def test_cut_of_a_host_that_is_not_running_names_it_and_says_how_to_boot_it(tmp_path):
    (tmp_path / "lab.json").write_text(json.dumps({"hosts": [
        {"name": "lab2", "address": "198.18.0.12", "netns": "dflab-nosuch-test"}],
        "user": "root", "cloud": None}))
    lab = Lab(tmp_path)
    for verb in (lab.cut, lab.heal):
        with pytest.raises(LabError) as e:
            verb("lab2")
        assert "lab2 is not running" in str(e.value) and "lab restart lab2" in str(e.value)
    with pytest.raises(LabError, match="no host named 'lab9'"):
        lab.cut("lab9")
