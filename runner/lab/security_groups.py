"""The emulated EC2's security groups as nftables: the ruleset the instance controller
(runner.lab.instances) applies in each instance host's netns, from the groups' ingress (and,
when a group's default allow-all egress was removed, egress) rules.

Apart from the controller because it is pure text from the API's answers, tested on its own.
"""

from __future__ import annotations

import ipaddress

SG_TABLE = "daskfleet_sg"


def instance_groups(inst: dict) -> list[str]:
    """The instance's security groups. moto reports the groups of an instance launched with
    SecurityGroupIds in a subnet (as Terraform does) only on its network interfaces."""
    ids = [g["GroupId"] for g in inst.get("SecurityGroups", [])]
    ids += [g["GroupId"] for n in inst.get("NetworkInterfaces", []) for g in n.get("Groups", [])]
    return sorted(set(ids))


def _ports(perm: dict) -> str:
    lo, hi = perm.get("FromPort"), perm.get("ToPort")
    if lo is None or lo == -1 or (lo == 0 and hi == 65535):
        return ""
    return f" dport {lo}" if lo == hi else f" dport {lo}-{hi}"


def _sg_rules(permissions: list[dict], members: dict[str, list[str]], peer: str) -> list[str]:
    """nftables rules for security-group `permissions`; ``peer`` is "saddr" (ingress: the
    source) or "daddr" (egress: the destination)."""
    rules = []
    for perm in permissions:
        proto = str(perm.get("IpProtocol", "-1")).lower()
        proto = {"6": "tcp", "17": "udp", "1": "icmp"}.get(proto, proto)
        if proto in ("tcp", "udp"):
            ports = _ports(perm)
            match = f"{proto}{ports}" if ports else f"meta l4proto {proto}"
        elif proto in ("-1", "all"):
            match = ""
        elif proto in ("icmp", "icmpv6", "58"):
            continue  # every ICMP is accepted anyway (below)
        else:
            match = f"meta l4proto {proto}"
        peers = [f"ip {peer} {r['CidrIp']}" for r in perm.get("IpRanges", [])]
        peers += [f"ip6 {peer} {r['CidrIpv6']}" for r in perm.get("Ipv6Ranges", [])]
        for pair in perm.get("UserIdGroupPairs", []):
            ips = sorted(members.get(pair.get("GroupId", ""), []), key=ipaddress.ip_address)
            if ips:
                peers.append(f"ip {peer} {{ {', '.join(ips)} }}")
            else:
                rules.append(f"    # {pair.get('GroupId')}: no running members")
        for who in peers:
            rules.append(f"    {who} {match} accept".replace("  accept", " accept"))
    return rules


def render_sg_ruleset(permissions: list[dict], members: dict[str, list[str]],
                      egress: list[dict] | None = None) -> str:
    """An nftables ruleset enforcing security-group ingress `permissions` (DescribeSecurityGroups
    IpPermissions of every group of the instance) and, given, `egress` (IpPermissionsEgress: a
    group whose default allow-all egress was removed, as Terraform removes it, lets out only what
    its rules name). `members`: group id -> private IPs of the running instances in that group.
    Replies to allowed traffic pass both ways (groups are stateful). Applied with `nft -f`: it
    replaces the table atomically."""
    chains = [
        "  chain input {",
        "    type filter hook input priority 0; policy drop;",
        "    ct state established,related accept",
        "    iif \"lo\" accept",
        "    meta l4proto { icmp, ipv6-icmp } accept",
        *_sg_rules(permissions, members, "saddr"),
        "  }",
    ]
    if egress is not None:
        chains += [
            "  chain output {",
            "    type filter hook output priority 0; policy drop;",
            "    ct state established,related accept",
            "    oif \"lo\" accept",
            "    meta l4proto { icmp, ipv6-icmp } accept",
            *_sg_rules(egress, members, "daddr"),
            "  }",
        ]
    return "\n".join([
        f"table inet {SG_TABLE}",  # so that the delete below never fails
        f"delete table inet {SG_TABLE}",
        f"table inet {SG_TABLE} {{",
        *chains,
        "}",
        "",
    ])
