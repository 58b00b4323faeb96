"""The EC2 resources an ephemeral run makes itself around EC2Cluster (boto3, synchronous): the
network (when the file asks for one) and a security group; and the calls to EC2 they and the
removal (runner.ephemeral.teardown) share, retried while EC2 says to try again."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from runner.ephemeral import tags as T
from runner.ephemeral.join import JOIN_PORT
from runner.errors import ProvisionError

# Errors that say "try again": EC2's throttling and its own transient failures.
TRANSIENT = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "InternalError",
                       "InternalFailure", "ServiceUnavailable", "Unavailable"})
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


def console_output(ec2, instance_id: str, timeout: float = 120.0) -> str:
    """What the instance has written on its console so far ("" before it wrote anything),
    retried while EC2 throttles. `Latest` asks for the newest output, which EC2 gives on Nitro
    types only; others answer without it, updated now and then."""
    def read(**latest) -> str:
        return ec2.get_console_output(InstanceId=instance_id, **latest).get("Output") or ""

    what = f"reading {instance_id}'s console (GetConsoleOutput)"
    try:
        return call_with_retry(lambda: read(Latest=True), what, timeout)
    except ProvisionError as e:
        if error_code(e.__cause__) not in ("UnsupportedOperation", "InvalidParameterCombination",
                                           "InvalidParameter"):
            raise
    return call_with_retry(read, what, timeout)


def group_rules(admin_cidr: str, ports: tuple[int, int]) -> list[str]:
    """The security group's ingress, in words (for plan and the progress lines)."""
    return [f"tcp {ports[0]}-{ports[1]} (scheduler, dashboard) from {admin_cidr}",
            f"tcp {JOIN_PORT} (each instance's TLS files, at boot) from {admin_cidr}",
            "tcp 0-65535 from members of the group (scheduler, workers, nannies)"]


def make_group(ec2, vpc_id: str, name: str, admin_cidr: str, ports: tuple[int, int], tags: dict,
               made: Made) -> str:
    """A group of the run's own: the Dask ports and the join port from admin_cidr, everything
    between its members, nothing else (no SSH: no key pair is made)."""
    gid = _after_create(lambda: ec2.create_security_group(
        GroupName=name, Description="daskfleet ephemeral cluster: Dask ports only", VpcId=vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": T.as_aws(tags)}])["GroupId"],
        f"creating a security group in {vpc_id}")
    made.group_id = gid
    made.created.append(f"security group {gid} ({name})")
    _after_create(lambda: ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": ports[0], "ToPort": ports[1],
         "IpRanges": [{"CidrIp": admin_cidr, "Description": "Dask scheduler and dashboard"}]},
        {"IpProtocol": "tcp", "FromPort": JOIN_PORT, "ToPort": JOIN_PORT,
         "IpRanges": [{"CidrIp": admin_cidr, "Description": "daskfleet join: TLS files at boot"}]},
        {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535,
         "UserIdGroupPairs": [{"GroupId": gid, "Description": "the cluster's own nodes"}]},
    ]), f"opening the Dask ports in the new security group {gid}")
    return gid

