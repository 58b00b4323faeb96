"""The emulated EC2's NAT gateways: each `available` NAT gateway of the API whose subnet routes
0.0.0.0/0 to an internet gateway becomes a namespace on the lab's bridge (dfec2-nat-<id>), with
no processes: its private address in its subnet and its Elastic IP, forwarding what the VPC's
instances send out of the VPC from that one public address, as AWS's managed NAT does. Nothing
reaches in through it (only replies to what went out). An instance whose subnet routes
0.0.0.0/0 to the NAT gateway has it as its default gateway (runner.lab.instances). A NAT
gateway in a subnet without a route to an internet gateway, or without an Elastic IP, is not
made, so what routes to it reaches nothing, as on AWS.

`python -m runner.lab.instances` (the controller) keeps them in step with the API; `lab down`
removes them with the instances' namespaces (the same dfec2- prefix).
"""

from __future__ import annotations

from pathlib import Path

from runner.lab.addresses import BRIDGE, VPC_RANGE
from runner.lab.machine import internet_routes, kill_netns_processes, nft_apply, run

NAT_TABLE = "daskfleet_nat"


def names(nat_id: str) -> tuple[str, str]:
    """(namespace, link) of a NAT gateway's host: the link name fits IFNAMSIZ (15)."""
    short = nat_id.removeprefix("nat-")
    return f"dfec2-nat-{short}", f"dfen{short[-11:]}"


def forward_ruleset() -> str:
    """Out from the VPC, and back only as replies: no connection from outside gets in."""
    return "\n".join([
        f"table inet {NAT_TABLE}",
        f"delete table inet {NAT_TABLE}",
        f"table inet {NAT_TABLE} {{",
        "  chain forward {",
        "    type filter hook forward priority 0; policy drop;",
        "    ct state established,related accept",
        f"    ip saddr {VPC_RANGE} ip daddr != {VPC_RANGE} accept",
        "  }",
        "}",
        "",
    ])


def boot_nat(nat_id: str, private: str, prefixlen: int, public: str, gateway: str) -> None:
    """The NAT gateway's host, at `private`/`prefixlen` in its subnet and `public` on the lab's
    internet, sending out through `gateway` (the VPC router: its subnet's route to the internet
    gateway). Never leaves half of one."""
    netns, link = names(nat_id)
    mac = "02:df:ea:{:02x}:{:02x}:{:02x}".format(*[int(o) for o in private.split(".")[1:]])
    try:
        run(["ip", "netns", "add", netns])
        run(["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "address", mac,
             "netns", netns])
        run(["ip", "link", "set", link, "master", BRIDGE, "up"])
        run(["ip", "-n", netns, "addr", "add", f"{private}/{prefixlen}", "dev", "eth0"])
        run(["ip", "-n", netns, "addr", "add", f"{public}/32", "dev", "eth0"])
        run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        run(["ip", "-n", netns, "route", "add", VPC_RANGE, "dev", "eth0"])
        run(["ip", "-n", netns, "route", "add", "default", "via", gateway, "dev", "eth0", "onlink"])
        # A router; and one that forwards back out of the link it received on: without
        # send_redirects off, it would tell each instance to skip it (and its address).
        run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
             "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"])
        nft_apply(netns, forward_ruleset())
        internet_routes(netns, public)  # its SNAT to the public address covers what it forwards
    except Exception:
        stop_nat(nat_id)
        raise


def stop_nat(nat_id: str) -> None:
    netns, link = names(nat_id)
    if Path(f"/run/netns/{netns}").exists():
        kill_netns_processes(netns)  # none are started; a stray `ip netns exec` would be one
        run(["ip", "netns", "del", netns], check=False)
    run(["ip", "link", "del", link], check=False)
