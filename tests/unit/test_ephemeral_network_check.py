"""Before anything is made, an ephemeral run refuses a network its instances could not work in
(moto's EC2 in-process): a VPC made for the run is public (an internet gateway, public
addresses), which a laptop reaches; on private addresses, a control machine that routes to the
subnet only through its default route, or an existing subnet whose way out is not a NAT; on
public addresses, an existing subnet whose way out is not an internet gateway."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from runner import aws_network
from runner.config import load_cluster
from runner.ephemeral.cluster import EphemeralCluster
from runner.ephemeral.preflight import check_network
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


def _public_and_private_subnets(ec2) -> tuple[str, str]:
    """A subnet routing 0.0.0.0/0 to an internet gateway, and one routing it nowhere."""
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    closed = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.2.0/24")["Subnet"]["SubnetId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    ec2.associate_route_table(RouteTableId=table, SubnetId=public)
    return public, closed


@mock_aws
def test_a_vpc_made_for_the_run_is_public_and_needs_no_route_from_a_laptop(tmp_path, monkeypatch):
    monkeypatch.setattr(aws_network, "local_route", lambda cidr: LAPTOP)
    made = _run(tmp_path, "{vpc_cidr: 10.42.0.0/16, subnet_cidr: 10.42.0.0/24}")
    assert made.e.network.public
    check_network(made.spec, made.ec2)  # the scheduler's public address: no route needed
    with pytest.raises(ConfigError) as info:
        _run(tmp_path, "{vpc_cidr: 10.42.0.0/16, subnet_cidr: 10.42.0.0/24, "
                       "public_addresses: false}")
    assert "public_addresses: false needs a subnet with a NAT gateway" in str(info.value)


@mock_aws
def test_private_addresses_from_a_laptop_or_without_a_nat_are_refused_before_anything_is_made(
        tmp_path, monkeypatch):
    monkeypatch.setattr(aws_network, "local_route", lambda cidr: LAPTOP)
    probe = _run(tmp_path, "{vpc_cidr: 10.42.0.0/16, subnet_cidr: 10.42.0.0/24}")
    public, closed = _public_and_private_subnets(probe.ec2)

    def existing(network: str) -> EphemeralCluster:
        run = _run(tmp_path, network)
        run.ec2 = probe.ec2
        return run

    private = existing(f"{{subnet_id: {closed}, require_nat: false}}")
    assert not private.e.network.public
    with pytest.raises(ConfigError) as info:
        check_network(private.spec, private.ec2)
    assert ("ephemeral.network.subnet_id: the instances get private addresses only, and this "
            "machine reaches 10.42.2.0/24 only through its default route") in str(info.value)
    assert "require_route: false" in str(info.value)
    relaxed = existing(f"{{subnet_id: {closed}, require_nat: false, require_route: false}}")
    check_network(relaxed.spec, relaxed.ec2)
    monkeypatch.setattr(aws_network, "local_route", lambda cidr: IN_VPC)
    check_network(private.spec, private.ec2)  # from inside the VPC: on

    through_igw = existing(f"{{subnet_id: {public}}}")
    with pytest.raises(ConfigError) as info:
        check_network(through_igw.spec, through_igw.ec2)
    message = str(info.value)
    assert (f"ephemeral.network.subnet_id {public}: its route table sends 0.0.0.0/0 through an "
            "internet gateway, which carries only instances with public addresses") in message
    assert "Route 0.0.0.0/0 through a NAT gateway" in message and "Nothing was created" in message
    # a subnet that reaches its registry through VPC endpoints, said so in the file
    endpoints = existing(f"{{subnet_id: {public}, require_nat: false}}")
    check_network(endpoints.spec, endpoints.ec2)


@mock_aws
def test_public_addresses_in_a_subnet_without_an_internet_gateway_are_refused(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(aws_network, "local_route", lambda cidr: LAPTOP)
    probe = _run(tmp_path, "{vpc_cidr: 10.42.0.0/16, subnet_cidr: 10.42.0.0/24}")
    public, closed = _public_and_private_subnets(probe.ec2)
    for subnet, ok in ((public, True), (closed, False)):
        run = _run(tmp_path, f"{{subnet_id: {subnet}, public_addresses: true}}")
        run.ec2 = probe.ec2
        if ok:
            check_network(run.spec, run.ec2)
            continue
        with pytest.raises(ConfigError) as info:
            check_network(run.spec, run.ec2)
        assert (f"subnet_id {closed}: ephemeral.network.public_addresses is true, but the "
                "subnet's route table does not send 0.0.0.0/0 to an internet gateway") \
            in str(info.value)
