"""What a cluster on private addresses needs from the network, checked before anything is made:
the control machine must have a route to the subnet that is not its default route (it sits in
the VPC, or a VPN or peering routes the VPC to it), and an ephemeral run's instances must reach
out through a NAT gateway (they pull their container image). On AWS either lack ends only after
minutes: SSH or the scheduler never answers, and the run waits out its ready_timeout.

``best_route`` and ``egress`` decide; ``local_routes`` and ``subnet_routes`` gather their input.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess


def best_route(routes: list[dict], cidr: str) -> dict | None:
    """The route of this machine (`ip -j route` rows) that carries traffic to ``cidr``: the most
    specific one whose destination holds the range's first address; None when none does."""
    net = ipaddress.ip_network(cidr, strict=False)
    target = net.network_address + (1 if net.num_addresses > 1 else 0)
    best, best_len = None, -1
    for r in routes:
        dst = r.get("dst", "")
        try:
            rnet = ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst, strict=False)
        except ValueError:
            continue
        if rnet.version == net.version and target in rnet and rnet.prefixlen > best_len:
            best, best_len = r, rnet.prefixlen
    return best


def private_route_problem(routes: list[dict] | None, cidr: str) -> str | None:
    """Why this machine cannot reach private addresses in ``cidr`` (None: it can, or it cannot
    be told: ``routes`` None)."""
    if routes is None:
        return None
    route = best_route(routes, cidr)
    if route is None:
        return f"this machine has no route to {cidr}"
    if route.get("dst") == "default":
        via = f" (via {route['gateway']} on {route.get('dev', '?')})" if route.get("gateway") else ""
        return (f"this machine reaches {cidr} only through its default route{via}, where a "
                "VPC's private addresses are not routed")
    return None


def local_routes() -> list[dict] | None:
    """This machine's IPv4 routes (main table), or None where `ip` cannot tell (not Linux)."""
    ip = shutil.which("ip")
    if not ip:
        return None
    proc = subprocess.run([ip, "-j", "-4", "route", "show", "table", "main"],
                          capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout or "[]")
    except ValueError:
        return None


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


def subnet_routes(ec2, subnet_id: str) -> list[dict]:
    """The routes of the subnet's route table: its own association, else its VPC's main table."""
    tables = ec2.describe_route_tables(
        Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])["RouteTables"]
    if not tables:
        vpc = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["VpcId"]
        tables = ec2.describe_route_tables(Filters=[
            {"Name": "vpc-id", "Values": [vpc]},
            {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    return tables[0]["Routes"] if tables else []


def subnet_cidr(ec2, subnet_id: str) -> str:
    return ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["CidrBlock"]
