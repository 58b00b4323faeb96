"""Where the emulated EC2 (runner/lab/ec2.py's moto server) is made as strict as EC2, wherever
that changes what a user sees: moto's answers patched, user data's size limit, spot refusals,
vCPU quotas and the zones that offer each instance type. Applied in the API server process
(`as_ec2_does`); the tests' switches (`refuse_spot`, `set_vcpu_quota`) write files in the lab's
cloud/ folder that it reads at each launch."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from runner.errors import LabError
from runner.lab.addresses import PUBLIC_RANGE

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


# EC2 keeps an instance's last 64 KB of console output.
CONSOLE_LIMIT = 64 * 1024


def console_text(lab_dir: Path | None, instance_id: str) -> str:
    """The last CONSOLE_LIMIT bytes the instance host wrote on its console ("" before it
    booted): nspawn's console output, which the controller keeps as the host's init.log."""
    if lab_dir is None:
        return ""
    try:
        with open(lab_dir / "hosts" / instance_id / "init.log", "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - CONSOLE_LIMIT))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


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


def as_ec2_does(lab_dir: Path | None = None) -> None:
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
      PUBLIC_RANGE, its own internet, and never reused while the server runs; Elastic IPs
      (a NAT gateway's) too;
    - a NAT gateway gets a random 10.x private address, outside its subnet, and a network
      interface made without an address gets a random one of its subnet (the network address,
      the VPC router's, an instance's): EC2 gives both the subnet's next free address;
    - GetConsoleOutput answers a canned Xen boot log: EC2 answers what the instance wrote on
      its console, which is how an ephemeral run learns each instance's join key
      (runner/ephemeral/join.py). The lab's is the instance host's console (its init.log),
      its last CONSOLE_LIMIT bytes, as EC2 keeps."""
    import base64

    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import elastic_ip_addresses as eips
    from moto.ec2.models import elastic_network_interfaces as interfaces
    from moto.ec2.models import nat_gateways
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface, NetworkInterfaceBackend
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.models.nat_gateways import NatGatewayBackend
    from moto.ec2.models.security_groups import SecurityGroupRule
    from moto.ec2.responses import subnets as subnet_responses
    from moto.ec2.responses.general import General
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
    make_interface = NetworkInterfaceBackend.create_network_interface
    make_nat = NatGatewayBackend.create_nat_gateway

    def create_network_interface(self, subnet, private_ip_address, *args, **kwargs):
        if not private_ip_address and not kwargs.get("private_ip_addresses"):
            private_ip_address = subnet.get_available_subnet_ip(None)  # as an instance's
        return make_interface(self, subnet, private_ip_address, *args, **kwargs)

    def create_nat_gateway(self, *args, **kwargs):
        nat = make_nat(self, *args, **kwargs)
        nat.private_ip = nat._eni.private_ip_address  # what its interface got in its subnet
        return nat

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

    def get_console_output(self):
        from moto.core.responses import ActionResult
        from moto.core.utils import utcnow
        from moto.ec2.utils import Base64EncodedString

        instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
        return ActionResult({"InstanceId": instance.id, "Timestamp": utcnow(),
                             "Output": Base64EncodedString.from_raw_string(
                                 console_text(lab_dir, instance.id))})

    # moto's classes patched in place; mypy refuses assigning to a method or a property, which
    # is what patching them is
    InstanceBackend.run_instances = run_instances  # type: ignore[method-assign]
    General.get_console_output = get_console_output  # type: ignore[method-assign]
    subnet_responses.random = WorstPick  # type: ignore[assignment]
    interfaces.random_public_ip = public_ip
    eips.random_ip = public_ip
    nat_gateways.random_private_ip = lambda *a, **k: None  # type: ignore[assignment]
    NetworkInterfaceBackend.create_network_interface = create_network_interface  # type: ignore[method-assign]
    NatGatewayBackend.create_nat_gateway = create_nat_gateway  # type: ignore[method-assign]
    ServiceQuotasBackend.get_service_quota = get_service_quota  # type: ignore[method-assign]
    full = vars(NetworkInterface)["association"].fget
    NetworkInterface.association = property(  # type: ignore[method-assign,assignment]
        lambda self: full(self) or None)
    SecurityGroupRule.description = property(  # type: ignore[method-assign,assignment]
        lambda self: self.ip_range.get("Description") or self.source_group.get("Description"))
