"""The emulated EC2 next to the lab: moto's server on 127.0.0.1:4566 with Debian's AMIs, a
Terraform CLI config for the local provider mirror, and the instance controller
(runner.lab.instances) that turns running instances into lab hosts.

`python -m runner.lab.ec2 --lab-dir DIR` is the API server process: moto's server, with the
lab's image list (MOTO_AMIS_PATH) and a `--lab-dir` in its command line so `lab down` can always
find it, even after a crash that lost the record.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runner.errors import LabError
from runner.lab.addresses import INTERNET_ADDRESS, PUBLIC_RANGE, VPC_RANGE
from runner.log import Progress, Say

logger = logging.getLogger("runner.lab.ec2")  # not __main__ under python -m

PORT = 4566
ENDPOINT = f"http://127.0.0.1:{PORT}"
# The VPC's router (where AWS puts it: the subnet's .1). The control machine holds the address,
# so the instances have a gateway to the lab's internet, but it is OUTSIDE the VPC as a laptop
# is: no route to the VPC's private addresses, and nothing it serves answers at the router's
# address (`outside_vpc_ruleset`). It reaches instances at their public addresses only.
VPC_ROUTER = "198.19.0.1"
VPC_SUBNET = "198.19.0.0/24"  # the aws module's subnet: the first /24 of vpc_cidr 198.19.0.0/16
VPC_TABLE = "daskfleet_vpc"  # the nftables table that keeps the control machine out of the VPC
DEBIAN_OWNER = "136693071363"
TF_PROVIDER = "registry.terraform.io/hashicorp/aws"
TF_MIRROR_CANDIDATES = ("/opt/tf-plugins", "~/.terraform.d/plugins", "/usr/local/share/terraform/plugins",
                        "/usr/share/terraform/plugins")
START_TIMEOUT_S = 30.0
# Every AWS client of the lab: dummy credentials, and never the instance metadata service.
CLIENT_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
              "AWS_EC2_METADATA_DISABLED": "true"}


def debian_amis() -> list[dict]:
    """Debian 12 as Debian publishes it (owner 136693071363), in moto's MOTO_AMIS_PATH format
    (the keyword arguments of moto.ec2.models.amis.Ami). moto has no ena_support field: its
    DescribeImages never reports EnaSupport."""
    def ami(ami_id: str, arch_name: str, arch: str) -> dict:
        return {
            "ami_id": ami_id, "name": f"debian-12-{arch_name}-20260101-1234",
            "description": f"Debian 12 (20260101-1234) {arch_name}",
            "owner_id": DEBIAN_OWNER, "public": True, "state": "available",
            "architecture": arch, "virtualization_type": "hvm", "hypervisor": "xen",
            "root_device_type": "ebs", "root_device_name": "/dev/xvda", "image_type": "machine",
            "sriov": "simple", "boot_mode": "uefi-preferred",
            "creation_date": "2026-01-01T12:34:00.000Z",
        }
    return [ami("ami-0deb12a0d64000001", "amd64", "x86_64"),
            ami("ami-0deb12a0a64000002", "arm64", "arm64")]


def find_tf_mirror() -> Path | None:
    """The folder holding registry.terraform.io/hashicorp/aws/<version>/<os_arch>/, if any."""
    env = os.environ.get("DASKFLEET_TF_MIRROR")
    for cand in ([env] if env else []) + list(TF_MIRROR_CANDIDATES):
        path = Path(cand).expanduser()
        if (path / TF_PROVIDER).is_dir():
            return path
    return None


def terraform_rc(mirror: Path) -> str:
    return (
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f"    path    = \"{mirror}\"\n"
        f"    include = [\"{TF_PROVIDER}\"]\n"
        "  }\n"
        "  direct {\n"
        f"    exclude = [\"{TF_PROVIDER}\"]\n"
        "  }\n"
        "}\n"
    )


def client(region: str):
    """A boto3 EC2 client for the emulator (only ever 127.0.0.1)."""
    os.environ.update(CLIENT_ENV)
    import boto3

    return boto3.client("ec2", endpoint_url=ENDPOINT, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _pid_is(pid: int | None, marker: str) -> bool:
    """Is `pid` alive and one of ours (its command line holds `marker`)? Guards against a
    recycled pid after a crash."""
    if not pid:
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False


def _our_pids(module: str, lab_dir: Path) -> list[int]:
    """Every process running `python -m MODULE --lab-dir LAB_DIR` (found in /proc)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                argv = p.joinpath("cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [a.decode(errors="replace") for a in argv]
            if module in words and str(lab_dir) in words:
                found.append(int(p.name))
    return found


def cloud_alive(cloud: dict) -> bool:
    return _pid_is(cloud.get("api_pid"), "runner.lab.ec2") and \
        _pid_is(cloud.get("controller_pid"), "runner.lab.instances")


def _spawn(module: str, lab, log_name: str, extra: list[str]) -> int:
    log = open(lab.cloud_dir / log_name, "ab")
    env = {**os.environ, **CLIENT_ENV, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--lab-dir", str(lab.state_dir), *extra],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        cwd=str(Path(__file__).resolve().parents[2]), env=env)
    log.close()
    return proc.pid


def start_cloud(lab, region: str, progress: Progress | None = None) -> None:
    """Start the API server and the instance controller; record them in lab.json."""
    say = Say(progress, logger)
    from runner.lab.machine import BRIDGE, port_open, run

    if port_open("127.0.0.1", PORT, timeout=0.5):
        raise LabError(
            f"lab: port {PORT} on 127.0.0.1 is taken (LocalStack, another moto?), and the emulated "
            f"EC2 needs it; stop what listens there (`ss -ltnp 'sport = :{PORT}'`) and run "
            "`daskfleet lab up --cloud aws` again.")
    t0 = time.monotonic()
    cdir = lab.cloud_dir
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "amis.json").write_text(json.dumps(debian_amis(), indent=2))
    mirror = find_tf_mirror()
    lab.cloud_terraform_rc.write_text(terraform_rc(mirror) if mirror else "")
    cloud: dict[str, Any] = {"provider": "aws", "endpoint": ENDPOINT, "region": region,
                             "api_pid": None, "controller_pid": None,
                             "terraform_rc": str(lab.cloud_terraform_rc), "port": PORT}
    data = lab._data()
    data["cloud"] = cloud
    lab._write(data)  # record first: `lab down` must find whatever starts next
    cloud["api_pid"] = _spawn("runner.lab.ec2", lab, "api.log", [])
    lab._write(data)
    deadline = time.monotonic() + START_TIMEOUT_S
    ec2 = client(region)
    while True:
        if not _pid_is(cloud["api_pid"], "runner.lab.ec2"):
            raise LabError(f"lab: the EC2 API server (moto) exited at start; see {cdir / 'api.log'}:"
                           f"\n{(cdir / 'api.log').read_text()[-1500:]}")
        try:
            images = ec2.describe_images(Owners=[DEBIAN_OWNER])["Images"]
            break
        except Exception:  # noqa: BLE001 - not answering yet
            if time.monotonic() > deadline:
                raise LabError(f"lab: the EC2 API server did not answer on {ENDPOINT} within "
                               f"{START_TIMEOUT_S:.0f}s; see {cdir / 'api.log'}.") from None
            time.sleep(0.2)
    if len(images) != 2:
        raise LabError(f"lab: the EC2 API server lists {len(images)} Debian images, not 2; "
                       f"see {cdir / 'amis.json'} and {cdir / 'api.log'}.")
    # the filter first: without the router's prefix route, packets to private addresses would
    # take this machine's default route, as they do on a laptop, and must stop here
    run(["nft", "-f", "-"], input=outside_vpc_ruleset())
    run(["ip", "addr", "replace", f"{VPC_ROUTER}/24", "dev", BRIDGE, "noprefixroute"])
    run(["ip", "addr", "replace", f"{INTERNET_ADDRESS}/24", "dev", BRIDGE])
    cloud["controller_pid"] = _spawn("runner.lab.instances", lab, "controller.log", [])
    lab._write(data)
    time.sleep(0.5)
    if not _pid_is(cloud["controller_pid"], "runner.lab.instances"):
        raise LabError(f"lab: the instance controller exited at start; see "
                       f"{cdir / 'controller.log'}:\n{(cdir / 'controller.log').read_text()[-1500:]}")
    say(f"lab: emulated EC2 at {ENDPOINT} (region {region}) in {time.monotonic() - t0:.1f}s; "
        f"VPC subnet {VPC_SUBNET} via {VPC_ROUTER} (this machine is outside it: it reaches "
        f"instances at public addresses, {PUBLIC_RANGE}); images "
        + ", ".join(f"{i['ImageId']} {i['Name']}" for i in images))
    if mirror:
        say(f"lab: Terraform CLI config {lab.cloud_terraform_rc} (hashicorp/aws from {mirror})")
    else:
        say(f"lab: no local mirror of {TF_PROVIDER} found (DASKFLEET_TF_MIRROR, "
            f"{', '.join(TF_MIRROR_CANDIDATES)}): `terraform init` will need network access; "
            f"{lab.cloud_terraform_rc} is empty")


def stop_cloud(lab) -> bool:
    """Stop the controller, then the API server (by record and by a sweep of /proc); remove the
    VPC router address. True if anything was running."""
    from runner.lab.machine import BRIDGE, run

    cloud = (lab._data() or {}).get("cloud") or {}
    pids: list[int] = []
    for module, key in (("runner.lab.instances", "controller_pid"), ("runner.lab.ec2", "api_pid")):
        mine = set(_our_pids(module, lab.state_dir))
        if _pid_is(cloud.get(key), module):
            mine.add(cloud[key])
        for pid in mine:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pids += mine
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() and not _zombie(p) for p in pids) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    run(["ip", "addr", "del", f"{VPC_ROUTER}/24", "dev", BRIDGE], check=False)
    run(["ip", "addr", "del", f"{INTERNET_ADDRESS}/24", "dev", BRIDGE], check=False)
    run(["nft", "delete", "table", "inet", VPC_TABLE], check=False)  # after the address went
    return bool(pids)


def outside_vpc_ruleset() -> str:
    """The control machine outside the VPC, as a laptop is: what it sends to a private address
    is dropped (a connection waits out its timeout, as one to an unrouted address does), and
    nothing on it answers at the VPC router's address. Replaces the table in one transaction."""
    return "\n".join([
        f"table inet {VPC_TABLE}",
        f"delete table inet {VPC_TABLE}",
        f"table inet {VPC_TABLE} {{",
        "  chain output {",
        "    type filter hook output priority 0; policy accept;",
        f"    ip daddr {VPC_RANGE} drop",
        "  }",
        "  chain input {",
        "    type filter hook input priority 0; policy accept;",
        f"    ip daddr {VPC_ROUTER} drop",
        "  }",
        "}",
        "",
    ])


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


# EC2 refuses RunInstances with more user data than this, counted before base64 encoding.
USER_DATA_LIMIT = 16384
# While this file exists in the lab's cloud/ folder, the emulated EC2 refuses spot launches as EC2
# does when it has no spot capacity; the file may name another of EC2's spot refusals
# (MaxSpotInstanceCountExceeded, SpotMaxPriceTooLow). Written by `refuse_spot(lab, ...)`.
REFUSE_SPOT_FILE = "refuse-spot"
SPOT_REFUSALS = {
    "InsufficientInstanceCapacity": "There is no Spot capacity available that matches your request.",
    "MaxSpotInstanceCountExceeded": "Max spot instance count exceeded",
    "SpotMaxPriceTooLow": "Your Spot request price is lower than the minimum required Spot "
                          "request fulfillment price.",
}


def refuse_spot(lab, code: str | None = "InsufficientInstanceCapacity") -> None:
    """From now on the emulated EC2 refuses spot launches with `code` (None: accepts them)."""
    path = lab.cloud_dir / REFUSE_SPOT_FILE
    if code is None:
        path.unlink(missing_ok=True)
    elif code not in SPOT_REFUSALS:
        raise LabError(f"lab: {code} is not one of EC2's spot refusals ({', '.join(SPOT_REFUSALS)})")
    else:
        path.write_text(code + "\n")


def _spot_refusal(lab_dir: Path | None) -> str | None:
    if lab_dir is None:
        return None
    try:
        return (lab_dir / "cloud" / REFUSE_SPOT_FILE).read_text().strip() or \
            "InsufficientInstanceCapacity"
    except FileNotFoundError:
        return None


# The account's standard vCPU quotas in the emulated EC2 (Service Quotas' L-1216C47A on-demand,
# L-34B43A08 spot), enforced at launch as EC2 does. A file of this name in the lab's cloud/ folder
# ({"on-demand": N, "spot": N}, written by `set_vcpu_quota`) overrides the default.
VCPU_QUOTA_FILE = "vcpu-quota.json"
DEFAULT_VCPU_QUOTA = {"on-demand": 32, "spot": 32}


def set_vcpu_quota(lab, quota: dict[str, int] | None) -> None:
    """From now on the emulated account's vCPU quotas are ``quota`` (None: the default)."""
    path = Path(lab.cloud_dir) / VCPU_QUOTA_FILE
    if quota is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(quota))


def _vcpu_quota(lab_dir: Path | None) -> dict[str, int]:
    try:
        return {**DEFAULT_VCPU_QUOTA, **json.loads(
            (lab_dir / "cloud" / VCPU_QUOTA_FILE).read_text())} if lab_dir else DEFAULT_VCPU_QUOTA
    except FileNotFoundError:
        return DEFAULT_VCPU_QUOTA


def _zones_offering(region: str, instance_type: str) -> set[str]:
    from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS

    return {o["Location"] for o in INSTANCE_TYPE_OFFERINGS["availability-zone"].get(region, [])
            if o["InstanceType"] == instance_type}


def _zone_aws_would_pick(region: str) -> str | None:
    """The zone a subnet made without one gets. AWS picks one of its own choosing; the lab
    picks the worst case, the region's zone that offers the fewest instance types (us-east-1e),
    so that code which relies on the pick is caught here rather than on a real account."""
    from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS

    counts: dict[str, int] = {}
    for o in INSTANCE_TYPE_OFFERINGS["availability-zone"].get(region, []):
        counts[o["Location"]] = counts.get(o["Location"], 0) + 1
    return min(sorted(counts), key=lambda z: counts[z]) if counts else None


def _standard_vcpus(instance_type: str) -> int:
    """vCPUs of a standard-family type (the quota's bucket), 0 for other families."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    from runner.aws_capacity import standard

    if not standard(instance_type):
        return 0
    return int(INSTANCE_TYPES.get(instance_type, {}).get("VCpuInfo", {}).get("DefaultVCpus", 2))


def _as_ec2_does(lab_dir: Path | None = None) -> None:
    """Where moto answers otherwise than EC2 in ways that change what a user sees:
    - an empty `Association` on a network interface without a public IP (EC2 reports none):
      the AWS provider reads it as associate_public_ip_address = true and replaces the instance;
    - the description of a rule that references a security group is dropped: the provider then
      modifies the rule, which moto refuses for protocol -1;
    (each of those would make every later `terraform apply` change what it created: a warm `up`
    must change nothing)
    - user data over 16,384 bytes is accepted: EC2 refuses the launch (InvalidParameterValue),
      so a run whose user data grew past it must fail here as it would on AWS;
    - spot capacity never runs out: with the lab's REFUSE_SPOT_FILE, a spot launch is refused
      with the error EC2 gives (InsufficientInstanceCapacity, ...), on-demand ones still start;
    - a subnet made without a zone lands in a random one (as on AWS, which picks): the lab puts
      it in the zone AWS might pick that offers the fewest types (`_zone_aws_would_pick`);
    - any type launches in any zone: EC2 refuses a type its subnet's zone does not offer
      (Unsupported), by moto's own per-zone offerings data;
    - there is no vCPU quota: EC2 refuses launches past the account's standard on-demand or
      spot vCPU quota (VcpuLimitExceeded); the lab's are DEFAULT_VCPU_QUOTA or its
      VCPU_QUOTA_FILE, and Service Quotas answers them (moto's knows only VPC quotas);
    - public addresses are made up (routable addresses of others): the lab's are drawn from
      PUBLIC_RANGE, its own internet, and never reused while the server runs."""
    import base64

    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import elastic_network_interfaces as interfaces
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.models.security_groups import SecurityGroupRule
    from moto.ec2.responses import subnets as subnet_responses
    from moto.servicequotas.models import ServiceQuotasBackend

    from runner.aws_capacity import QUOTA_CODES

    launch = InstanceBackend.run_instances
    issued: set[str] = set()

    def public_ip() -> str:
        """The next free address of the lab's internet (moto's would be made up, routable)."""
        for host in ipaddress.ip_network(PUBLIC_RANGE).hosts():
            address = str(host)
            if int(host) - int(ipaddress.ip_network(PUBLIC_RANGE).network_address) >= 10 \
                    and address not in issued:
                issued.add(address)
                return address
        raise EC2ClientError("AddressLimitExceeded", f"the lab's {PUBLIC_RANGE} is used up")
    quota_of = ServiceQuotasBackend.get_service_quota

    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        refusal = _spot_refusal(lab_dir)
        spot = kwargs.get("instance_market_options") == "spot"
        if refusal and spot:
            raise EC2ClientError(refusal, SPOT_REFUSALS.get(refusal, refusal))
        if user_data is not None:
            size = len(base64.b64decode(user_data.as_bytes("ascii")))
            if size > USER_DATA_LIMIT:
                raise EC2ClientError("InvalidParameterValue",
                                     f"User data is limited to {USER_DATA_LIMIT} bytes")
        itype = kwargs.get("instance_type") or "m1.small"
        nics = kwargs.get("nics") or []
        subnet_id = kwargs.get("subnet_id") or (nics[0].get("SubnetId") if nics else None)
        zone = self.get_subnet(subnet_id).availability_zone if subnet_id else \
            kwargs.get("placement")
        offered = _zones_offering(self.region_name, itype)
        if zone and offered and zone not in offered:
            raise EC2ClientError(
                "Unsupported", f"Your requested instance type ({itype}) is not supported in your "
                f"requested Availability Zone ({zone}). Please retry your request by not "
                f"specifying an Availability Zone or choosing {', '.join(sorted(offered))}.")
        market = "spot" if spot else "on-demand"
        need = _standard_vcpus(itype) * int(count)
        if need:
            used = sum(_standard_vcpus(i.instance_type) for r in self.all_reservations()
                       for i in r.instances if i.state in ("pending", "running")
                       and (i.lifecycle == "spot") == spot)
            limit = _vcpu_quota(lab_dir)[market]
            if used + need > limit:
                raise EC2ClientError(
                    "VcpuLimitExceeded", f"You have requested more vCPU capacity than your "
                    f"current vCPU limit of {limit} allows for the instance bucket that the "
                    "specified instance type belongs to. Please visit "
                    "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to "
                    "this limit.")
        return launch(self, image_id, count, user_data, security_group_names, **kwargs)

    class WorstPick:
        """moto's CreateSubnet picks a zone with random.choice when none is given (as AWS picks
        one): here it gets the worst case instead, every time."""

        @staticmethod
        def choice(zones):
            worst = _zone_aws_would_pick(zones[0].region_name)
            return next((z for z in zones if z.name == worst), zones[0])

    def get_service_quota(self, service_code, quota_code):
        markets = {code: market for market, code in QUOTA_CODES.items()}
        if service_code == "ec2" and quota_code in markets:
            return {"ServiceCode": "ec2", "QuotaCode": quota_code, "Unit": "None",
                    "Value": float(_vcpu_quota(lab_dir)[markets[quota_code]]),
                    "Adjustable": True, "GlobalQuota": False}
        return quota_of(self, service_code, quota_code)

    # moto's classes patched in place; mypy refuses assigning to a method or a property, which
    # is what patching them is
    InstanceBackend.run_instances = run_instances  # type: ignore[method-assign]
    subnet_responses.random = WorstPick  # type: ignore[assignment]
    interfaces.random_public_ip = public_ip
    ServiceQuotasBackend.get_service_quota = get_service_quota  # type: ignore[method-assign]
    full = vars(NetworkInterface)["association"].fget
    NetworkInterface.association = property(  # type: ignore[method-assign,assignment]
        lambda self: full(self) or None)
    SecurityGroupRule.description = property(  # type: ignore[method-assign,assignment]
        lambda self: self.ip_range.get("Description") or self.source_group.get("Description"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="the lab's EC2 API server (moto)")
    p.add_argument("--lab-dir", required=True)
    args = p.parse_args(argv)
    # Read by moto.ec2.models.amis at import: the only images are the lab's (Debian's).
    os.environ["MOTO_AMIS_PATH"] = str(Path(args.lab_dir) / "cloud" / "amis.json")
    from moto.server import main as moto_main

    _as_ec2_does(Path(args.lab_dir))
    # Not one log line per request (the controller polls twice a second); errors still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    moto_main(["-H", "127.0.0.1", "-p", str(PORT)])


if __name__ == "__main__":
    main()
