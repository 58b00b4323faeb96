"""`daskfleet lab vpn SUBNET_ID`: this machine joins an emulated VPC as over a client VPN, so that
what needs the control machine inside the VPC (an ephemeral run on private addresses, behind a
NAT gateway) can run in the lab. As AWS Client VPN does, the endpoint takes a network interface
in the subnet (made through the API, so its address is the subnet's and no instance gets it);
this machine sends into the VPC's range from that address, and the instances' security groups
see it as the source. `daskfleet lab vpn --off` (or `lab down`) disconnects.

Without it, the control machine stays outside every VPC (runner.lab.ec2.outside_vpc_ruleset).
"""

from __future__ import annotations

import logging

from runner.errors import LabError
from runner.lab.addresses import BRIDGE, OWNS_CLOUD
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

DESCRIPTION = "daskfleet lab: client VPN endpoint"


def connect(lab, subnet_id: str, progress: Progress | None = None) -> dict:
    """Route the subnet's VPC to this machine from an address in the subnet; returns the
    record (subnet, vpc_cidr, address, interface)."""
    from runner.lab.ec2 import client, cloud_alive, outside_vpc_ruleset
    from runner.lab.machine import run

    cloud = lab.cloud()
    if not OWNS_CLOUD or not cloud or not cloud_alive(cloud):
        raise LabError("lab: `lab vpn` needs the emulated EC2 running (`daskfleet lab up --cloud "
                       "aws`, in lab 0).")
    if cloud.get("vpn"):
        raise LabError(f"lab: already connected to {cloud['vpn']['subnet']} "
                       f"({cloud['vpn']['address']}); `daskfleet lab vpn --off` first.")
    ec2 = client(cloud["region"])
    found = ec2.describe_subnets(Filters=[{"Name": "subnet-id", "Values": [subnet_id]}])["Subnets"]
    if not found:
        raise LabError(f"lab: no subnet {subnet_id} in the emulated EC2 (`aws ec2 "
                       "describe-subnets` lists them).")
    vpc = ec2.describe_vpcs(VpcIds=[found[0]["VpcId"]])["Vpcs"][0]
    eni = ec2.create_network_interface(SubnetId=subnet_id, Description=DESCRIPTION)[
        "NetworkInterface"]
    vpn = {"subnet": subnet_id, "vpc_cidr": vpc["CidrBlock"], "address": eni["PrivateIpAddress"],
           "interface": eni["NetworkInterfaceId"]}
    data = lab.read_record()
    data["cloud"]["vpn"] = vpn
    lab.write_record(data)  # first: `lab down` must find what comes next
    run(["ip", "addr", "replace", f"{vpn['address']}/32", "dev", BRIDGE])
    run(["ip", "route", "replace", vpn["vpc_cidr"], "dev", BRIDGE, "src", vpn["address"]])
    run(["nft", "-f", "-"], input=outside_vpc_ruleset((vpn["address"], vpn["vpc_cidr"])))
    Say(progress, logger)(
        f"lab: this machine reaches {vpn['vpc_cidr']} ({found[0]['VpcId']}) as over a client "
        f"VPN, from {vpn['address']} in {subnet_id} (interface {vpn['interface']}); security "
        "groups must admit that address")
    return vpn


def disconnect(lab, progress: Progress | None = None) -> bool:
    """Outside the VPC again. True if it was connected."""
    from runner.lab.ec2 import client, drop_vpn_address, outside_vpc_ruleset
    from runner.lab.machine import run

    data = lab.read_record() or {}
    cloud = data.get("cloud") or {}
    vpn = cloud.get("vpn")
    if not vpn:
        return False
    run(["nft", "-f", "-"], input=outside_vpc_ruleset())  # first: nothing more goes in
    drop_vpn_address(cloud)
    try:
        client(cloud["region"]).delete_network_interface(NetworkInterfaceId=vpn["interface"])
    except Exception as e:  # noqa: BLE001 - the API may be gone; its state goes with it
        logger.debug(f"lab: deleting {vpn['interface']}: {e}")
    del cloud["vpn"]
    lab.write_record(data)
    Say(progress, logger)(f"lab: VPN to {vpn['vpc_cidr']} disconnected; this machine is outside "
                          "the VPC again")
    return True
