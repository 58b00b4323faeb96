"""The EC2 resources an ephemeral run makes itself around EC2Cluster (boto3, synchronous): the
network (when the file asks for one), a security group, and the removal of everything tagged with
the run; plus `gc`'s sweep over every daskfleet-tagged resource of a region."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from runner.ephemeral import tags as T
from runner.errors import ProvisionError
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
# Errors that say "try again": EC2's throttling and its own transient failures.
TRANSIENT = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "InternalError",
                       "InternalFailure", "ServiceUnavailable", "Unavailable"})
# How long teardown keeps trying before it reports what is left (then `gc` is the safety net).
TEARDOWN_TIMEOUT_S = 600.0
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


def error_code(e: BaseException | None) -> str:
    """A botocore ClientError's code ("" for anything else)."""
    response = getattr(e, "response", None)
    return response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""


def not_found(code: str) -> bool:
    return code.endswith("NotFound")


def delays(first: float = 0.5, cap: float = 15.0) -> Iterator[float]:
    """Capped exponential backoff: first, 2*first, ... up to cap, for ever."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


def call_with_retry(call, what: str, timeout: float, retry_on=lambda code: False,
                    done_on=lambda code: False):
    """call() until it succeeds, retrying with backoff on TRANSIENT errors and those retry_on(code)
    accepts, until `timeout` s have passed. An error that done_on(code) accepts ends it with None
    (a delete of what is already gone); any other raises ProvisionError naming `what`."""
    deadline = time.monotonic() + timeout
    for delay in delays():
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - botocore's errors, told apart by their code
            code = error_code(e)
            if done_on(code):
                return None
            if not (code in TRANSIENT or retry_on(code)) or time.monotonic() + delay > deadline:
                raise ProvisionError(f"ephemeral: {what} failed: {type(e).__name__}: {e}") from e
        time.sleep(delay)
    raise AssertionError("unreachable")  # delays() never ends


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
    gateway_id: str | None = None
    group_id: str | None = None
    created: list[str] = field(default_factory=list)


# EC2 is eventually consistent: a resource just created may be unknown (*.NotFound) to the next
# call that names it for a few seconds. Such calls are retried this long.
CONSISTENCY_TIMEOUT_S = 60.0


def _after_create(call, what: str):
    return call_with_retry(call, what, CONSISTENCY_TIMEOUT_S, retry_on=not_found)


def make_network(ec2, vpc_cidr: str, subnet_cidr: str, tags: dict, made: Made, zone: str,
                 public: bool = True) -> None:
    """A VPC and a subnet in ``zone`` (one checked to offer the instance types: a subnet left to
    AWS's pick may land in a zone that lacks them). ``public``: an internet gateway too, and the
    VPC's main route table sending 0.0.0.0/0 to it, so that instances with public addresses
    answer this machine and reach out (the main table goes with the VPC; the gateway is tagged
    and removed with the run)."""
    spec = lambda kind: [{"ResourceType": kind, "Tags": T.as_aws(tags)}]  # noqa: E731
    made.vpc_id = ec2.create_vpc(CidrBlock=vpc_cidr, TagSpecifications=spec("vpc"))["Vpc"]["VpcId"]
    made.created.append(f"vpc {made.vpc_id} ({vpc_cidr})")
    made.subnet_id = _after_create(
        lambda: ec2.create_subnet(VpcId=made.vpc_id, CidrBlock=subnet_cidr, AvailabilityZone=zone,
                                  TagSpecifications=spec("subnet"))["Subnet"]["SubnetId"],
        f"creating a subnet in the new VPC {made.vpc_id}")
    made.created.append(f"subnet {made.subnet_id} ({subnet_cidr}, {zone})")
    if not public:
        return
    made.gateway_id = ec2.create_internet_gateway(
        TagSpecifications=spec("internet-gateway"))["InternetGateway"]["InternetGatewayId"]
    made.created.append(f"internet gateway {made.gateway_id}")
    _after_create(lambda: ec2.attach_internet_gateway(InternetGatewayId=made.gateway_id,
                                                      VpcId=made.vpc_id),
                  f"attaching {made.gateway_id} to {made.vpc_id}")
    main = _after_create(lambda: ec2.describe_route_tables(Filters=[
        {"Name": "vpc-id", "Values": [made.vpc_id]},
        {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]["RouteTableId"],
        f"finding the main route table of {made.vpc_id}")
    _after_create(lambda: ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0",
                                           GatewayId=made.gateway_id),
                  f"routing 0.0.0.0/0 of {made.vpc_id} to {made.gateway_id}")
    made.created.append(f"route 0.0.0.0/0 -> {made.gateway_id} in {main}")


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
    gid = _after_create(lambda: ec2.create_security_group(
        GroupName=name, Description="daskfleet ephemeral cluster: Dask ports only", VpcId=vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": T.as_aws(tags)}])["GroupId"],
        f"creating a security group in {vpc_id}")
    made.group_id = gid
    made.created.append(f"security group {gid} ({name})")
    _after_create(lambda: ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": ports[0], "ToPort": ports[1],
         "IpRanges": [{"CidrIp": admin_cidr, "Description": "Dask scheduler and dashboard"}]},
        {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535,
         "UserIdGroupPairs": [{"GroupId": gid, "Description": "the cluster's own nodes"}]},
    ]), f"opening the Dask ports in the new security group {gid}")
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
    for g in f.groups:
        _delete(lambda g=g: ec2.delete_security_group(GroupId=g["GroupId"]),
                f"deleting security group {g['GroupId']}", left())
        removed.append(f"security group {g['GroupId']} ({g.get('GroupName')})")
    for k in f.key_pairs:
        _delete(lambda k=k: ec2.delete_key_pair(KeyPairId=k["KeyPairId"]),
                f"deleting key pair {k['KeyName']}", left())
        removed.append(f"key pair {k['KeyName']}")
    for g in f.gateways:  # detached first: a VPC with a gateway attached cannot be deleted
        gid = g["InternetGatewayId"]
        for a in g.get("Attachments", []):
            _delete(lambda a=a, gid=gid: ec2.detach_internet_gateway(InternetGatewayId=gid,
                                                                     VpcId=a["VpcId"]),
                    f"detaching internet gateway {gid} from {a['VpcId']}", left())
        _delete(lambda gid=gid: ec2.delete_internet_gateway(InternetGatewayId=gid),
                f"deleting internet gateway {gid}", left())
        removed.append(f"internet gateway {gid}")
    for s in f.subnets:
        _delete(lambda s=s: ec2.delete_subnet(SubnetId=s["SubnetId"]),
                f"deleting subnet {s['SubnetId']}", left())
        removed.append(f"subnet {s['SubnetId']}")
    for v in f.vpcs:
        _delete(lambda v=v: ec2.delete_vpc(VpcId=v["VpcId"]), f"deleting VPC {v['VpcId']}", left())
        removed.append(f"vpc {v['VpcId']}")
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
