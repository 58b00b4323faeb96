"""What a cluster on private addresses needs from the network, checked before anything is made:
the control machine must have a route to the subnet that is not its default route (it sits in
the VPC, or a VPN or peering routes the VPC to it; one whose default gateway knows the VPC, such
as a network with Direct Connect, says so in the file), and an ephemeral run's instances must reach
out through a NAT gateway (they pull their container image). On AWS either lack ends only after
minutes: SSH or the scheduler never answers, and the run waits out its ready_timeout.

``private_route_problem`` and ``egress`` decide; ``local_route`` and ``subnet_routes`` gather
their input.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess


def private_route_problem(chosen: dict | None, defaults: list[dict], cidr: str) -> str | None:
    """Why this machine cannot reach private addresses in ``cidr``, from the route the kernel
    chose for its first instance address (`ip route get`: rules and tables included, so a VPN's own table
    counts) and the main table's default routes. None: a route of its own (the VPC's link, a VPN,
    a peering) carries it."""
    if chosen is None:
        return f"this machine has no route to {cidr}"
    via = (chosen.get("gateway"), chosen.get("dev"))
    if chosen.get("gateway") and any((d.get("gateway"), d.get("dev")) == via for d in defaults):
        return (f"this machine reaches {cidr} only through its default route (via {via[0]} on "
                f"{via[1]}), where a VPC's private addresses are not routed")
    return None


def first_address(cidr: str) -> str:
    """The first address an instance can have: AWS keeps .0 to .3 of every subnet (.1 is the
    VPC router, which a machine outside the VPC may hold an address like)."""
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + (4 if net.num_addresses > 4 else 0))


def local_route(cidr: str) -> tuple[dict | None, list[dict]] | None:
    """(the route the kernel takes to ``cidr``'s first address, or None when it has none; the
    main table's default routes); None where `ip` cannot tell (not Linux)."""
    ip = shutil.which("ip")
    if not ip:
        return None

    def rows(*args: str) -> list[dict] | None:
        proc = subprocess.run([ip, "-j", *args], capture_output=True, text=True, timeout=10)
        if proc.returncode != 0:
            return None
        try:
            return json.loads(proc.stdout or "[]")
        except ValueError:
            return None

    table = rows("-4", "route", "show", "table", "main")
    if table is None:
        return None
    chosen = rows("-4", "route", "get", first_address(cidr))  # fails: no route at all
    return (chosen[0] if chosen else None), [r for r in table if r.get("dst") == "default"]


def check_private_route(cidr: str) -> str | None:
    """Why this machine cannot reach private addresses in ``cidr`` (None: it can, or it cannot
    be told)."""
    found = local_route(cidr)
    return None if found is None else private_route_problem(found[0], found[1], cidr)


def egress(routes: list[dict]) -> str | None:
    """How a subnet's route table sends 0.0.0.0/0: "nat" (a NAT gateway or instance), "igw" (an
    internet gateway: only for instances with public addresses), or None (nowhere)."""
    for r in routes:
        if r.get("DestinationCidrBlock") != "0.0.0.0/0" or r.get("State") == "blackhole":
            continue
        if r.get("NatGatewayId") or r.get("InstanceId") or r.get("NetworkInterfaceId") \
                or r.get("TransitGatewayId"):
            return "nat"
        if str(r.get("GatewayId", "")).startswith("igw-"):
            return "igw"
    return None


def default_target(routes: list[dict]) -> str | None:
    """The NAT gateway (its id) that a subnet's route table sends 0.0.0.0/0 to, if any."""
    for r in routes:
        if r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("State") != "blackhole":
            return r.get("NatGatewayId")
    return None


def routes_of(subnet_id: str, vpc_id: str, tables: list[dict]) -> list[dict]:
    """The routes of the subnet's route table, among ``tables`` (DescribeRouteTables'): its own
    association, else its VPC's main table."""
    own = [t for t in tables if any(a.get("SubnetId") == subnet_id
                                    for a in t.get("Associations", []))]
    main = [t for t in tables if t.get("VpcId") == vpc_id
            and any(a.get("Main") for a in t.get("Associations", []))]
    found = own or main
    return found[0]["Routes"] if found else []


def subnet_routes(ec2, subnet_id: str) -> list[dict]:
    """The routes of the subnet's route table: its own association, else its VPC's main table."""
    vpc = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["VpcId"]
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])
    return routes_of(subnet_id, vpc, tables["RouteTables"])


def subnet_cidr(ec2, subnet_id: str) -> str:
    return ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["CidrBlock"]
