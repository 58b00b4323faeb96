"""Removing what ephemeral runs made: everything tagged with one run, looked for again until
nothing is left (`remove_run`, an ephemeral run's teardown), and `gc`'s sweep over every
daskfleet-tagged resource of a region whose run expired.

Apart from runner.ephemeral.aws, which makes the network and the security group and holds the
retried calls to EC2 both use; this module imports it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from runner.ephemeral import tags as T
from runner.ephemeral.aws import call_with_retry, delays, error_code, not_found
from runner.errors import ProvisionError
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
# How long teardown keeps trying before it reports what is left (then `gc` is the safety net).
TEARDOWN_TIMEOUT_S = 600.0


def _filters(tag_filters: dict[str, str]) -> list[dict]:
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in tag_filters.items()]


def tagged_instances(ec2, tag_filters: dict[str, str] | None = None,
                     states: tuple[str, ...] = LIVE_STATES) -> list[dict]:
    filters = _filters(tag_filters or {}) + [{"Name": "instance-state-name", "Values": list(states)}]
    if not tag_filters:
        filters.append({"Name": "tag-key", "Values": [T.RUN]})
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def terminate_and_wait(ec2, ids: list[str], timeout: float,
                       progress: Progress | None = None) -> None:
    """Terminate `ids` and wait, with backoff, until EC2 reports each terminated. An id EC2 does
    not know yet (just launched: eventual consistency) is retried, not taken as gone."""
    if not ids:
        return
    deadline = time.monotonic() + timeout
    call_with_retry(lambda: ec2.terminate_instances(InstanceIds=ids),
                    f"terminating {', '.join(ids)}", timeout, retry_on=not_found)
    live = list(ids)
    for delay in delays(first=1.0, cap=10.0):
        out = call_with_retry(lambda: ec2.describe_instances(InstanceIds=ids),
                              f"describing {', '.join(ids)}", max(1.0, deadline - time.monotonic()),
                              retry_on=not_found)
        live = [i["InstanceId"] for r in out["Reservations"] for i in r["Instances"]
                if i["State"]["Name"] != "terminated"]
        if not live:
            return
        if time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
    raise ProvisionError(f"ephemeral: instances {', '.join(live)} were not terminated within "
                         f"{timeout:.0f}s")


def _delete(call, what: str, timeout: float):
    """A delete: retried while a terminating instance still holds the resource
    (DependencyViolation); already gone (*.NotFound) is done."""
    return call_with_retry(call, what, timeout, retry_on=lambda c: c == "DependencyViolation",
                           done_on=not_found)


def remove_run(ec2, run_id: str, progress: Progress | None = None,
               timeout: float = TEARDOWN_TIMEOUT_S,
               known_instances: tuple[str, ...] = (), settle: float = 0.0) -> list[str]:
    """Remove everything tagged with `run_id` (instances terminated and waited for, security
    groups, key pairs, subnets, VPCs), looking again with backoff until a look finds nothing or
    `timeout` passes; then ProvisionError names what is left. Returns what was removed, in words.

    `known_instances`: ids RunInstances returned, looked up by id as well (a tag search can miss
    an instance for a while after launch). `settle` > 0 (a start was interrupted, so a launch may
    still be in flight): nothing found must be found again `settle` s later."""
    deadline = time.monotonic() + timeout
    removed: list[str] = []
    error: Exception | None = None
    quiet_looks = 0
    for delay in delays(first=1.0, cap=15.0):
        try:
            found = find_tagged(ec2, {T.RUN: run_id})
            found.instances += _live_by_id(ec2, [i for i in known_instances if i not in
                                                 {x["InstanceId"] for x in found.instances}])
            if found.empty():
                quiet_looks += 1
                if settle <= 0 or quiet_looks >= 2:
                    return removed
                delay = settle
            else:
                quiet_looks = 0
                removed += remove_found(ec2, found, progress,
                                        timeout=max(1.0, deadline - time.monotonic()))
                continue  # look again at once: what remains, or confirm that nothing does
        except ProvisionError as e:
            error = e
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(delay, remaining))  # the last look is at the deadline
    left = "unknown (the EC2 API did not answer)"
    try:
        f = find_tagged(ec2, {T.RUN: run_id})
        left = ", ".join(describe_found(f)) or "nothing"
    except Exception:  # noqa: BLE001 - reporting only
        pass
    raise ProvisionError(f"ephemeral: run {run_id} is not fully removed after {timeout:.0f}s"
                         f"{f' (last error: {error})' if error else ''}; still there: {left}")


def _live_by_id(ec2, ids: list[str]) -> list[dict]:
    if not ids:
        return []
    try:
        out = ec2.describe_instances(InstanceIds=ids)
    except Exception as e:  # noqa: BLE001 - not visible yet: the next look asks again
        if not_found(error_code(e)):
            return []
        raise ProvisionError(f"ephemeral: describing instances {', '.join(ids)} failed: {e}") from e
    return [i for r in out["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] in LIVE_STATES]


def describe_found(f: Found) -> list[str]:
    return ([f"instance {i['InstanceId']}" for i in f.instances]
            + [f"security group {g['GroupId']}" for g in f.groups]
            + [f"key pair {k['KeyName']}" for k in f.key_pairs]
            + [f"internet gateway {g['InternetGatewayId']}" for g in f.gateways]
            + [f"subnet {s['SubnetId']}" for s in f.subnets]
            + [f"vpc {v['VpcId']}" for v in f.vpcs])


@dataclass
class Found:
    instances: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    key_pairs: list[dict] = field(default_factory=list)
    gateways: list[dict] = field(default_factory=list)
    subnets: list[dict] = field(default_factory=list)
    vpcs: list[dict] = field(default_factory=list)

    def every(self) -> list[dict]:
        return (self.instances + self.groups + self.key_pairs + self.gateways + self.subnets
                + self.vpcs)

    def empty(self) -> bool:
        return not self.every()


def find_tagged(ec2, tag_filters: dict[str, str] | None = None, keep=lambda tags: True) -> Found:
    """Every daskfleet-run resource matching `tag_filters` (default: any run) for which
    keep(tags) is true."""
    filters = _filters(tag_filters or {}) + ([] if tag_filters else
                                             [{"Name": "tag-key", "Values": [T.RUN]}])
    f = Found()
    f.instances = [i for i in tagged_instances(ec2, tag_filters) if keep(T.as_dict(i.get("Tags")))]
    f.groups = [g for g in ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
                if keep(T.as_dict(g.get("Tags")))]
    f.key_pairs = [k for k in ec2.describe_key_pairs(Filters=filters)["KeyPairs"]
                   if keep(T.as_dict(k.get("Tags")))]
    f.gateways = [g for g in ec2.describe_internet_gateways(Filters=filters)["InternetGateways"]
                  if keep(T.as_dict(g.get("Tags")))]
    f.subnets = [s for s in ec2.describe_subnets(Filters=filters)["Subnets"]
                 if keep(T.as_dict(s.get("Tags")))]
    f.vpcs = [v for v in ec2.describe_vpcs(Filters=filters)["Vpcs"] if keep(T.as_dict(v.get("Tags")))]
    return f


def remove_found(ec2, f: Found, progress: Progress | None = None,
                 timeout: float = TEARDOWN_TIMEOUT_S) -> list[str]:
    say = Say(progress, logger)
    deadline = time.monotonic() + timeout
    left = lambda: max(1.0, deadline - time.monotonic())  # noqa: E731
    removed = []
    ids = [i["InstanceId"] for i in f.instances]
    if ids:
        say(f"terminating {len(ids)} instance(s): {', '.join(ids)}")
        terminate_and_wait(ec2, ids, left(), progress)
        removed += [f"instance {i}" for i in ids]

    def delete(what: str, call, **params) -> None:
        _delete(lambda: call(**params), f"deleting {what}", left())
        removed.append(what)

    for g in f.groups:
        delete(f"security group {g['GroupId']} ({g.get('GroupName')})",
               ec2.delete_security_group, GroupId=g["GroupId"])
    for k in f.key_pairs:
        delete(f"key pair {k['KeyName']}", ec2.delete_key_pair, KeyPairId=k["KeyPairId"])
    for g in f.gateways:  # detached first: a VPC with a gateway attached cannot be deleted
        gid = g["InternetGatewayId"]
        for a in g.get("Attachments", []):
            _delete(lambda a=a, gid=gid: ec2.detach_internet_gateway(InternetGatewayId=gid,
                                                                     VpcId=a["VpcId"]),
                    f"detaching internet gateway {gid} from {a['VpcId']}", left())
        delete(f"internet gateway {gid}", ec2.delete_internet_gateway, InternetGatewayId=gid)
    for s in f.subnets:
        delete(f"subnet {s['SubnetId']}", ec2.delete_subnet, SubnetId=s["SubnetId"])
    for v in f.vpcs:
        delete(f"vpc {v['VpcId']}", ec2.delete_vpc, VpcId=v["VpcId"])
    return removed


def remove_tagged(ec2, tag_filters: dict[str, str], progress: Progress | None = None,
                  timeout: float = TEARDOWN_TIMEOUT_S) -> list[str]:
    return remove_found(ec2, find_tagged(ec2, tag_filters), progress, timeout)


def gc(ec2, now: datetime, older_than_s: float | None,
       progress: Progress | None = None) -> tuple[list[str], list[str]]:
    """Remove every daskfleet-tagged resource whose expiry passed (or older than `older_than_s`).
    Returns (removed, kept) in words."""
    why: dict[str, str] = {}

    def eligible(t: dict) -> bool:
        reason = T.expired(t, now, older_than_s)
        if reason:
            why[t[T.RUN]] = reason
        return reason is not None

    every = find_tagged(ec2)
    found = find_tagged(ec2, keep=eligible)
    kept = sorted({T.as_dict(r.get("Tags"))[T.RUN] for r in every.every()} - set(why))
    for run, reason in sorted(why.items()):
        Say(progress, logger)(f"gc: run {run}: {reason}")
    return remove_found(ec2, found, progress), kept
