"""Before anything is created on EC2: an availability zone that offers the instance types, and
room for their vCPUs in the account's quota. Both otherwise fail only once the VPC and subnet
exist: RunInstances answers `Unsupported` for a type the subnet's zone lacks (us-east-1e has no
m6i), `VcpuLimitExceeded` past the quota. Used by the aws provider's `up` and by ephemeral runs.

The decisions are pure functions (``choose_zone``, ``family``, ``quota_shortfall``); the calls
that gather their inputs take a boto3 client each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from runner.errors import ConfigError

# The vCPU quota buckets this checks: EC2's standard families (A, C, D, H, I, M, R, T, Z), the
# bucket a new account is most often short in. Other families (G, P, X, Inf, Trn, ...) have
# quotas of their own, reported as not checked.
STANDARD_FAMILIES = frozenset("acdhimrtz")
QUOTA_CODES = {"on-demand": "L-1216C47A",  # Running On-Demand Standard (A, C, D, H, I, M, R, T, Z)
               "spot": "L-34B43A08"}  # All Standard (A, C, D, H, I, M, R, T, Z) Spot Requests


def family(instance_type: str) -> str:
    """'m6i.large' -> 'm', 'inf2.xlarge' -> 'inf', 'u-6tb1.metal' -> 'u'."""
    letters = re.match(r"[a-z]+", instance_type.lower())
    return letters[0] if letters else instance_type


def standard(instance_type: str) -> bool:
    return family(instance_type) in STANDARD_FAMILIES


def choose_zone(offered: Mapping[str, set[str]], wanted: str | None, key: str,
                region: str) -> str:
    """The zone to use, from type -> zones offering it: ``wanted`` if every type is offered
    there, else the first zone (by name) that offers them all. ``key`` names the setting."""
    types = sorted(offered)
    common = set.intersection(*(set(offered[t]) for t in types)) if types else set()
    if wanted:
        missing = [t for t in types if wanted not in offered[t]]
        if missing:
            where = ", ".join(sorted(common)) or "none: no zone of the region offers them all"
            raise ConfigError(
                f"{key}: {wanted} does not offer {', '.join(missing)} (EC2 would refuse the "
                f"launch after the network exists); zones of {region} that offer "
                f"{', '.join(types)}: {where}. Nothing was created.")
        return wanted
    if not common:
        lacking = [t for t in types if not offered[t]]
        why = (f"{', '.join(lacking)} {'is' if len(lacking) == 1 else 'are'} not offered in "
               f"{region}" if lacking else f"no zone of {region} offers {', '.join(types)} together")
        raise ConfigError(f"{key}: {why}; choose another instance type or region. Nothing was "
                          "created.")
    return sorted(common)[0]


def quota_shortfall(quota: float, used: int, needed: int) -> int:
    """vCPUs missing for ``needed`` more, with ``used`` of ``quota`` taken (0: it fits)."""
    return max(0, int(needed - (quota - used)))


def offered_zones(ec2, types: Iterable[str]) -> dict[str, set[str]]:
    """Instance type -> the availability zones of the client's region that offer it."""
    types = sorted(set(types))
    found: dict[str, set[str]] = {t: set() for t in types}
    pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": types}])
    for page in pages:
        for offer in page["InstanceTypeOfferings"]:
            found.setdefault(offer["InstanceType"], set()).add(offer["Location"])
    return found


def subnet_zone(ec2, subnet_id: str) -> str:
    return ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["AvailabilityZone"]


def vcpus(ec2, types: Iterable[str]) -> dict[str, int]:
    types = sorted(set(types))
    out = ec2.describe_instance_types(InstanceTypes=types)["InstanceTypes"]
    return {t["InstanceType"]: int(t["VCpuInfo"]["DefaultVCpus"]) for t in out}


def running_vcpus(ec2, market: str, exclude: Mapping[str, str] | None = None) -> int:
    """vCPUs of the region's pending and running standard instances of ``market`` ("spot" or
    "on-demand"), except those tagged with every tag of ``exclude`` (a cluster's own, which an
    `up` keeps rather than adds)."""
    rows = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    for page in pages:
        for reservation in page["Reservations"]:
            for inst in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                if exclude and all(tags.get(k) == v for k, v in exclude.items()):
                    continue
                spot = inst.get("InstanceLifecycle") == "spot"
                if standard(inst["InstanceType"]) and spot == (market == "spot"):
                    rows.append(inst["InstanceType"])
    sizes = vcpus(ec2, rows) if rows else {}
    return sum(sizes[t] for t in rows)


def check_quota(ec2, quotas, new: Mapping[str, Mapping[str, int]], key: str,
                exclude: Mapping[str, str] | None = None) -> list[str]:
    """Refuse when the instances of ``new`` (market -> instance type -> count) do not fit the
    account's standard vCPU quotas with what already runs. Returns what could not be checked,
    in words (the caller says so); ``quotas`` is a boto3 service-quotas client."""
    unchecked = []
    for market, counts in new.items():
        counts = {t: n for t, n in counts.items() if n}
        others = sorted(t for t in counts if not standard(t))
        if others:
            unchecked.append(f"the {market} vCPU quota of {', '.join(others)} (not a standard "
                             "family: its own quota, not checked)")
        counts = {t: n for t, n in counts.items() if standard(t)}
        if not counts:
            continue
        try:
            quota = quotas.get_service_quota(ServiceCode="ec2", QuotaCode=QUOTA_CODES[market])
            limit = float(quota["Quota"]["Value"])
        except Exception as e:  # noqa: BLE001 - any refusal (no permission, no endpoint): say so
            unchecked.append(f"the {market} standard vCPU quota ({QUOTA_CODES[market]}): "
                             f"Service Quotas answered {type(e).__name__}: {e}")
            continue
        sizes = vcpus(ec2, counts)
        needed = sum(sizes[t] * n for t, n in counts.items())
        used = running_vcpus(ec2, market, exclude)
        short = quota_shortfall(limit, used, needed)
        if short:
            what = ", ".join(f"{n} x {t} ({sizes[t]} vCPUs)" for t, n in sorted(counts.items()))
            raise ConfigError(
                f"{key}: {what} need {needed} vCPUs, and the account's {market} standard vCPU "
                f"quota ({QUOTA_CODES[market]}) is {limit:.0f}, {used} of them in use: {short} "
                "short (EC2 would refuse the launch with VcpuLimitExceeded after the network "
                "exists). Ask for more in the Service Quotas console, or use fewer or smaller "
                "instances. Nothing was created.")
    return unchecked
