"""An ephemeral run's instances have private addresses only: before anything is made, the run
refuses a control machine that routes to the subnet only through its default route, and an
existing subnet whose way out is not a NAT (moto's EC2 in-process)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from runner import aws_network
from runner.config import load_cluster
from runner.ephemeral.cluster import EphemeralCluster
from runner.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
HOME = {"dst": "default", "gateway": "192.168.1.1", "dev": "wlan0"}
LAPTOP = ({"dst": "10.42.0.1", "gateway": "192.168.1.1", "dev": "wlan0"}, [HOME])
IN_VPC = ({"dst": "10.42.0.1", "dev": "ens5"}, [HOME])


def _run(tmp_path: Path, network: str) -> EphemeralCluster:
    text = (REPO / "clusters" / "aws-ephemeral-lab.yaml").read_text()
    head, _, rest = text.partition("  network:")
    rest = rest.split("\n", 3)[3]  # the lab's three network lines
    path = tmp_path / "eph.yaml"
    path.write_text(f"{head}  network: {network}\n{rest}")
    run = EphemeralCluster(load_cluster(path), "20261203-000000-x-abcd")
    run.ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="a",
                           aws_secret_access_key="b")
    return run


@mock_aws
def test_a_laptop_and_a_subnet_without_a_nat_are_refused_before_anything_is_made(
        tmp_path, monkeypatch):
    monkeypatch.setattr(aws_network, "local_route", lambda cidr: LAPTOP)
    made = _run(tmp_path, "{vpc_cidr: 10.42.0.0/16, subnet_cidr: 10.42.0.0/24}")
    with pytest.raises(ConfigError) as info:
        made._check_network()
    assert ("ephemeral.network.subnet_cidr: the instances get private addresses only, and this "
            "machine reaches 10.42.0.0/24 only through its default route") in str(info.value)
    assert "require_route: false" in str(info.value)
    relaxed = _run(tmp_path, "{vpc_cidr: 10.42.0.0/16, subnet_cidr: 10.42.0.0/24, "
                             "require_route: false}")
    relaxed._check_network()  # the file says the default gateway routes the VPC
    monkeypatch.setattr(aws_network, "local_route", lambda cidr: IN_VPC)
    made._check_network()  # from inside the VPC: on

    ec2 = made.ec2
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
    existing = _run(tmp_path, f"{{subnet_id: {subnet}}}")
    existing.ec2 = ec2
    with pytest.raises(ConfigError) as info:
        existing._check_network()
    message = str(info.value)
    assert (f"ephemeral.network.subnet_id {subnet}: its route table sends 0.0.0.0/0 through an "
            "internet gateway, which carries only instances with public addresses") in message
    assert "Route 0.0.0.0/0 through a NAT gateway" in message and "Nothing was created" in message
    # a subnet that reaches its registry through VPC endpoints, said so in the file
    relaxed = _run(tmp_path, f"{{subnet_id: {subnet}, require_nat: false}}")
    relaxed.ec2 = ec2
    relaxed._check_network()
