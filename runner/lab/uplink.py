"""`lab up --uplink RATE`: a laptop's uplink, as a token bucket on the bridge's own egress. Only
what this machine sends into the lab passes there; traffic bridged between hosts leaves through
the hosts' ports, so node-to-node copies run at the bridge's speed, as inside a VPC. And the
bridge's transmit counter, which measures what this machine sent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runner.errors import LabError
from runner.lab.machine import BRIDGE, link_exists, run

UPLINK_UNITS = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
UPLINK_OFF = "off"


def parse_uplink(rate: str) -> int:
    """`--uplink` in tc's words (50mbit, 800kbit, 1gbit) -> bits per second."""
    import re

    m = re.fullmatch(r"(\d+(?:\.\d+)?)(kbit|mbit|gbit)", rate.strip().lower())
    bits = int(float(m[1]) * UPLINK_UNITS[m[2]]) if m else 0
    if not 64_000 <= bits <= 100 * 10**9:
        raise LabError(f"lab: --uplink {rate!r} is not a rate from 64kbit to 100gbit; write it as "
                       f"tc does, for example 50mbit, 800kbit or 1gbit (or `{UPLINK_OFF}`).")
    return bits


def uplink_qdisc_args(bits_per_s: int) -> list[str]:
    """tc's arguments for the bridge's token bucket: a burst of 20 ms at the rate (at least 64 KiB,
    one GSO segment, which tbf needs to pass at all) and up to 100 ms of queue, as a
    home router's buffer."""
    burst = max(64 * 1024, bits_per_s // 8 // 50)
    return ["tc", "qdisc", "replace", "dev", BRIDGE, "root", "tbf", "rate", f"{bits_per_s}bit",
            "burst", str(burst), "latency", "100ms"]


def uplink_from_tc(tc_json: str) -> dict | None:
    """The shaping `tc -j qdisc show dev BRIDGE` reports: {"rate_bits_per_s", "burst_bytes"},
    or None when the bridge has no token bucket (no `--uplink`)."""
    for q in json.loads(tc_json or "[]"):
        if q.get("kind") == "tbf" and q.get("root"):
            opts = q.get("options", {})
            return {"rate_bits_per_s": int(opts["rate"]) * 8, "burst_bytes": int(opts["burst"])}
    return None


def shape_uplink(rate: str) -> dict | None:
    """Shape (or, with `off`, unshape) the control machine's link to the lab; returns what the
    kernel now applies."""
    if rate.strip().lower() == UPLINK_OFF:
        run(["tc", "qdisc", "del", "dev", BRIDGE, "root"], check=False)  # none there: fine
    else:
        if shutil.which("tc") is None:
            raise LabError("lab: --uplink needs tc; install it with `apt-get install -y iproute2`.")
        run(uplink_qdisc_args(parse_uplink(rate)))
    return read_uplink()


def read_uplink() -> dict | None:
    if shutil.which("tc") is None or not link_exists(BRIDGE):
        return None
    return uplink_from_tc(run(["tc", "-j", "qdisc", "show", "dev", BRIDGE], check=False).stdout)


def bridge_tx_bytes() -> int:
    """Bytes this machine has sent into the lab since the bridge was made (the bridge device's
    own transmit counter: bridged host-to-host frames are not counted there)."""
    return int(Path(f"/sys/class/net/{BRIDGE}/statistics/tx_bytes").read_text())
