"""The EC2 resources an ephemeral run makes itself around EC2Cluster (boto3, synchronous): the
network (when the file asks for one), a security group, and the removal of everything tagged with
the run; plus `gc`'s sweep over every daskfleet-tagged resource of a region."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from runner.ephemeral import tags as T
from runner.errors import ProvisionError

LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
INSTALL_HINT = ("dask-cloudprovider is not installed; it is the `cloud` extra: run `make venv` (the "
                "lock has it) or `pip install 'daskfleet[cloud]'`")


@contextmanager
def file_environment(env: dict[str, str]) -> Iterator[None]:
    """The cluster file's `environment:` (endpoint, credentials) over the shell's, for the
    duration: boto3 and aiobotocore read them when a client is made."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ec2_client(region: str):
    try:
        import boto3
    except ImportError:
        raise ProvisionError(INSTALL_HINT) from None
    return boto3.client("ec2", region_name=region)


def _api_error(e: Exception, what: str) -> ProvisionError:
    return ProvisionError(f"ephemeral: {what} failed: {type(e).__name__}: {e}. Check the "
                          "credentials and region (and AWS_ENDPOINT_URL in the file's environment:).")


def find_image(ec2, owner: str | None, name: str | None, image_id: str | None) -> dict:
    """The AMI: by id, or the newest of `owner` whose name matches `name`."""
    try:
        if image_id:
            images = ec2.describe_images(ImageIds=[image_id])["Images"]
        else:
            images = ec2.describe_images(Owners=[owner], Filters=[
                {"Name": "name", "Values": [name]}, {"Name": "state", "Values": ["available"]}])["Images"]
    except Exception as e:  # noqa: BLE001 - botocore's errors: one message naming the call
        raise _api_error(e, "looking up the image") from e
    if not images:
        what = image_id or f"owner {owner}, name {name}"
        raise ProvisionError(f"ephemeral.image: no available image matches {what} in this region.")
    return max(images, key=lambda i: i.get("CreationDate", ""))


@dataclass
class Made:
    """What the run made around the cluster, in creation order (removed in reverse)."""

    vpc_id: str | None = None
    subnet_id: str | None = None
    group_id: str | None = None
    created: list[str] = field(default_factory=list)


def make_network(ec2, vpc_cidr: str, subnet_cidr: str, tags: dict, made: Made) -> None:
    spec = lambda kind: [{"ResourceType": kind, "Tags": T.as_aws(tags)}]  # noqa: E731
    made.vpc_id = ec2.create_vpc(CidrBlock=vpc_cidr, TagSpecifications=spec("vpc"))["Vpc"]["VpcId"]
    made.created.append(f"vpc {made.vpc_id} ({vpc_cidr})")
    made.subnet_id = ec2.create_subnet(VpcId=made.vpc_id, CidrBlock=subnet_cidr,
                                       TagSpecifications=spec("subnet"))["Subnet"]["SubnetId"]
    made.created.append(f"subnet {made.subnet_id} ({subnet_cidr})")


def subnet_vpc(ec2, subnet_id: str) -> str:
    try:
        return ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["VpcId"]
    except Exception as e:  # noqa: BLE001
        raise _api_error(e, f"looking up ephemeral.network.subnet_id {subnet_id}") from e


def group_rules(admin_cidr: str, ports: tuple[int, int]) -> list[str]:
    """The security group's ingress, in words (for plan and the progress lines)."""
    return [f"tcp {ports[0]}-{ports[1]} (scheduler, dashboard) from {admin_cidr}",
            "tcp 0-65535 from members of the group (scheduler, workers, nannies)"]


def make_group(ec2, vpc_id: str, name: str, admin_cidr: str, ports: tuple[int, int], tags: dict,
               made: Made) -> str:
    """A group of the run's own: the Dask ports from admin_cidr, everything between its members,
    nothing else (no SSH: no key pair is made)."""
    gid = ec2.create_security_group(
        GroupName=name, Description="daskfleet ephemeral cluster: Dask ports only", VpcId=vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": T.as_aws(tags)}])["GroupId"]
    made.group_id = gid
    made.created.append(f"security group {gid} ({name})")
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": ports[0], "ToPort": ports[1],
         "IpRanges": [{"CidrIp": admin_cidr, "Description": "Dask scheduler and dashboard"}]},
        {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535,
         "UserIdGroupPairs": [{"GroupId": gid, "Description": "the cluster's own nodes"}]},
    ])
    return gid


def _filters(tag_filters: dict[str, str]) -> list[dict]:
    return [{"Name": f"tag:{k}", "Values": [v]} for k, v in tag_filters.items()]


def tagged_instances(ec2, tag_filters: dict[str, str] | None = None,
                     states: tuple[str, ...] = LIVE_STATES) -> list[dict]:
    filters = _filters(tag_filters or {}) + [{"Name": "instance-state-name", "Values": list(states)}]
    if not tag_filters:
        filters.append({"Name": "tag-key", "Values": [T.RUN]})
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def terminate_and_wait(ec2, ids: list[str], timeout: float, progress) -> None:
    if not ids:
        return
    ec2.terminate_instances(InstanceIds=ids)
    deadline = time.monotonic() + timeout
    while True:
        out = ec2.describe_instances(InstanceIds=ids)
        live = [i["InstanceId"] for r in out["Reservations"] for i in r["Instances"]
                if i["State"]["Name"] != "terminated"]
        if not live:
            return
        if time.monotonic() > deadline:
            raise ProvisionError(f"ephemeral: instances {', '.join(live)} were not terminated within "
                                 f"{timeout:.0f}s; run `daskfleet gc` later (they are tagged).")
        time.sleep(1)


def _retry(call, what: str, timeout: float = 120.0):
    """Deleting a group or subnet fails while a terminating instance still holds it: retry."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - botocore ClientError (DependencyViolation, ...)
            code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
            if code.endswith("NotFound"):
                return None
            if code != "DependencyViolation" or time.monotonic() > deadline:
                raise ProvisionError(f"ephemeral: {what} failed: {e}") from e
            time.sleep(2)


def remove_run(ec2, run_id: str, progress, timeout: float = 300.0) -> list[str]:
    """Remove everything tagged with `run_id`: instances (terminated, waited for), security
    groups, key pairs, subnets, VPCs. Returns what was removed, in words."""
    return remove_tagged(ec2, {T.RUN: run_id}, progress, timeout)


@dataclass
class Found:
    instances: list[dict] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    key_pairs: list[dict] = field(default_factory=list)
    subnets: list[dict] = field(default_factory=list)
    vpcs: list[dict] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.instances or self.groups or self.key_pairs or self.subnets or self.vpcs)


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
    f.subnets = [s for s in ec2.describe_subnets(Filters=filters)["Subnets"]
                 if keep(T.as_dict(s.get("Tags")))]
    f.vpcs = [v for v in ec2.describe_vpcs(Filters=filters)["Vpcs"] if keep(T.as_dict(v.get("Tags")))]
    return f


def remove_found(ec2, f: Found, progress, timeout: float = 300.0) -> list[str]:
    removed = []
    ids = [i["InstanceId"] for i in f.instances]
    if ids:
        progress(f"terminating {len(ids)} instance(s): {', '.join(ids)}")
        terminate_and_wait(ec2, ids, timeout, progress)
        removed += [f"instance {i}" for i in ids]
    for g in f.groups:
        _retry(lambda g=g: ec2.delete_security_group(GroupId=g["GroupId"]),
               f"deleting security group {g['GroupId']}")
        removed.append(f"security group {g['GroupId']} ({g.get('GroupName')})")
    for k in f.key_pairs:
        ec2.delete_key_pair(KeyPairId=k["KeyPairId"])
        removed.append(f"key pair {k['KeyName']}")
    for s in f.subnets:
        _retry(lambda s=s: ec2.delete_subnet(SubnetId=s["SubnetId"]), f"deleting subnet {s['SubnetId']}")
        removed.append(f"subnet {s['SubnetId']}")
    for v in f.vpcs:
        _retry(lambda v=v: ec2.delete_vpc(VpcId=v["VpcId"]), f"deleting VPC {v['VpcId']}")
        removed.append(f"vpc {v['VpcId']}")
    return removed


def remove_tagged(ec2, tag_filters: dict[str, str], progress, timeout: float = 300.0) -> list[str]:
    return remove_found(ec2, find_tagged(ec2, tag_filters), progress, timeout)


def gc(ec2, now: datetime, older_than_s: float | None, progress) -> tuple[list[str], list[str]]:
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
    kept = sorted({T.as_dict(r.get("Tags"))[T.RUN] for r in
                   every.instances + every.groups + every.key_pairs + every.subnets + every.vpcs}
                  - set(why))
    for run, reason in sorted(why.items()):
        progress(f"gc: run {run}: {reason}")
    return remove_found(ec2, found, progress), kept
