"""The emulated EC2 is as strict as EC2 where that changes what a user sees: here, user data
over 16,384 bytes is refused at launch (moto alone accepts any size). Run in a process of its
own: the patch applies to moto's classes, as in the lab's API server."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

SCRIPT = r"""
import base64, boto3
from botocore.exceptions import ClientError
from moto import mock_aws
from runner.lab.ec2_strict import USER_DATA_LIMIT, as_ec2_does

as_ec2_does()
with mock_aws():
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="a",
                       aws_secret_access_key="b")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ok = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                           UserData="x" * USER_DATA_LIMIT)
    print("at the limit:", len(ok["Instances"]))
    try:
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                          UserData="x" * (USER_DATA_LIMIT + 1))
        print("over the limit: launched")
    except ClientError as e:
        print("over the limit:", e.response["Error"]["Code"], e.response["Error"]["Message"])
"""


def test_user_data_over_16384_bytes_is_refused_as_ec2_refuses_it():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "at the limit: 1" in out.stdout
    assert ("over the limit: InvalidParameterValue User data is limited to 16384 bytes"
            in out.stdout), out.stdout


NAT_SCRIPT = r"""
import boto3, ipaddress
from moto import mock_aws
from runner.lab.ec2_strict import as_ec2_does

as_ec2_does()
with mock_aws():
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="a",
                       aws_secret_access_key="b")
    vpc = ec2.create_vpc(CidrBlock="198.19.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="198.19.1.0/24",
                              AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    eip = ec2.allocate_address(Domain="vpc")
    nat = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip["AllocationId"])["NatGateway"]
    eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet,
                             InstanceType="t3.micro")
    print("eip", eip["PublicIp"])
    print("nat", nat["NatGatewayAddresses"][0]["PrivateIp"], nat["NatGatewayAddresses"][0]["PublicIp"])
    print("eni", eni["PrivateIpAddress"])
    print("instance", inst["Instances"][0]["PrivateIpAddress"])
"""


def test_a_nat_gateway_and_an_elastic_ip_get_addresses_as_ec2_gives_them():
    """moto gives a NAT gateway a random 10.x address outside its subnet, an Elastic IP a
    made-up public one, and an interface made without an address a random one of its subnet
    (which may be the network's, the router's, or an instance's). The lab needs each where
    EC2 puts it: the NAT gateway's host sits at its address, and the control machine must
    never contact a made-up public one."""
    out = subprocess.run([sys.executable, "-c", NAT_SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    nat_private, nat_public = got["nat"].split()
    lab_internet = ipaddress.ip_network("198.18.128.0/24")
    assert ipaddress.ip_address(got["eip"]) in lab_internet, got
    assert nat_public == got["eip"], got
    subnet = ipaddress.ip_network("198.19.1.0/24")
    taken = [ipaddress.ip_address(a) for a in (nat_private, got["eni"], got["instance"])]
    for address in taken:
        assert address in subnet and int(address) - int(subnet.network_address) >= 4, got
    assert len(set(taken)) == 3, got  # each its own, as EC2 hands them out
