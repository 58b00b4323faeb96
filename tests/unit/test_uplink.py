"""`lab up --uplink RATE`: the rate as tc reads it, the token bucket on the bridge, and what
`lab status` reads back from tc."""

from __future__ import annotations

import json

import pytest

from runner.cli import parser
from runner.errors import LabError
from runner.lab.machine import BRIDGE
from runner.lab.uplink import parse_uplink, uplink_from_tc, uplink_qdisc_args


@pytest.mark.parametrize("rate, bits", [("50mbit", 50_000_000), ("800kbit", 800_000),
                                        ("1gbit", 10**9), ("2.5Mbit", 2_500_000)])
def test_rates_are_read_as_tc_writes_them(rate, bits):
    assert parse_uplink(rate) == bits


@pytest.mark.parametrize("rate", ["50", "50mb", "fast", "10kbit", "-5mbit", "500gbit", ""])
def test_a_rate_tc_would_not_take_is_refused_with_examples(rate):
    with pytest.raises(LabError, match=r"--uplink .* write it as tc does, for example 50mbit"):
        parse_uplink(rate)


def test_only_the_bridge_is_shaped_with_a_burst_tbf_can_pass():
    args = uplink_qdisc_args(50_000_000)
    # the bridge's own egress: what this machine sends; host-to-host frames leave by the ports
    assert args[:7] == ["tc", "qdisc", "replace", "dev", BRIDGE, "root", "tbf"]
    opts = dict(zip(args[7::2], args[8::2], strict=True))
    assert opts["rate"] == "50000000bit" and opts["latency"] == "100ms"
    assert int(opts["burst"]) >= 64 * 1024  # one GSO segment, or tbf drops everything
    assert int(uplink_qdisc_args(10 * 10**9)[10]) == 10 * 10**9 // 8 // 50  # 20 ms at the rate


def test_status_reads_the_rate_the_kernel_applies():
    # `tc -j qdisc show` on this machine after `tc qdisc replace ... tbf rate 50mbit burst 64kb`
    shown = ('[{"kind":"tbf","handle":"8001:","root":true,"refcnt":3,'
             '"options":{"rate":6250000,"burst":65531,"lat":100000}}]')
    assert uplink_from_tc(shown) == {"rate_bits_per_s": 50_000_000, "burst_bytes": 65531}
    # a bridge without shaping: noqueue, or nothing at all
    assert uplink_from_tc(json.dumps([{"kind": "noqueue", "handle": "0:", "root": True}])) is None
    assert uplink_from_tc("") is None


def test_lab_up_takes_the_uplink_option():
    assert parser().parse_args(["lab", "up", "--uplink", "50mbit"]).uplink == "50mbit"
    assert parser().parse_args(["lab", "up"]).uplink is None
