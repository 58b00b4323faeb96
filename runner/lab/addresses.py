"""The lab's address plan (all inside 198.18.0.0/15, the benchmarking range no real network
routes): plain lab hosts and the object store on 198.18.N.0/24 (N: the lab's index, below); the
emulated EC2's VPCs in 198.19.0.0/16; its internet, where instances get public addresses and this
machine has one, on 198.18.128.0/24. Shared by the hosts' primitives (runner.lab.machine), the
emulated EC2 (runner.lab.ec2) and the object store (runner.lab.objectstore).

A machine can run several labs side by side (the e2e tier runs two at once, `make e2e`): each
is DASKFLEET_LAB_INDEX=N (0, the default, to 9) with its own bridge, /24, namespaces, links,
state folder and nftables table. The emulated EC2 (one VPC range, one internet, one API port)
runs in lab 0 only.
"""

from __future__ import annotations

import os

from runner.errors import LabError

MAX_INDEX = 9


def lab_index(environ: dict | os._Environ = os.environ) -> int:
    raw = environ.get("DASKFLEET_LAB_INDEX", "0").strip() or "0"
    if not raw.isdigit() or int(raw) > MAX_INDEX:
        raise LabError(f"lab: DASKFLEET_LAB_INDEX={raw!r} is not a lab index from 0 to "
                       f"{MAX_INDEX}; unset it for the default lab (0).")
    return int(raw)


INDEX = lab_index()
OWNS_CLOUD = INDEX == 0  # the emulated EC2's lab: only it starts, sweeps or stops it
# Lab 0 keeps the names it always had (an operator's `ip netns` and scripts know them)
_SUFFIX = "" if INDEX == 0 else str(INDEX)

SUBNET_PREFIX = f"198.18.{INDEX}."  # plain hosts from .11, the bridge (this machine) at .1
NETNS_PREFIX = f"dflab{_SUFFIX}-"  # every namespace of the lab's: `lab down` sweeps by it
VETH_PREFIX = f"dfv{_SUFFIX}-"  # the hosts' (and the store's) links on the bridge
BRIDGE = f"dflab{INDEX}"
STATE_DIR = f"/var/lib/daskfleet-lab{_SUFFIX}"
CUT_TABLE = f"daskfleet_cut{_SUFFIX}"  # `lab cut`: this machine's namespace has one per lab
OBJECT_STORE = SUBNET_PREFIX + "5"
OBJECT_STORE_NETNS = NETNS_PREFIX + "s3"  # swept by `lab down` with the hosts
VPC_RANGE = "198.19.0.0/16"  # every lab VPC's private addresses (clusters/*-lab.yaml vpc_cidr)
# The lab's internet: instances' public addresses come from here (never moto's made-up ones,
# which this machine must never contact), and the control machine is INTERNET_ADDRESS on it.
PUBLIC_RANGE = "198.18.128.0/24"
INTERNET_ADDRESS = "198.18.128.1"
