"""A cluster on private addresses needs a route to them from the control machine (not its
default route) and, for an ephemeral run in an existing subnet, a NAT for the instances' way
out: the decisions, and the route table lookup against moto."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from runner import aws_network as net

HOME = {"dst": "default", "gateway": "192.168.1.1", "dev": "wlan0"}
WIREGUARD = {"dst": "10.42.0.1", "dev": "wg0"}  # wg-quick: its own table, chosen by a rule
IN_VPC = {"dst": "10.42.0.1", "dev": "ens5"}  # the VPC's own link


@pytest.mark.parametrize("chosen,reaches", [
    ({"dst": "10.42.0.1", "gateway": "192.168.1.1", "dev": "wlan0"}, False),  # a laptop
    (IN_VPC, True), (WIREGUARD, True), (None, False),
    ({"dst": "10.42.0.1", "gateway": "10.9.0.1", "dev": "tun0"}, True)])  # a VPN's gateway
def test_only_a_route_other_than_the_default_one_reaches_private_addresses(chosen, reaches):
    problem = net.private_route_problem(chosen, [HOME], "10.42.0.0/24")
    assert (problem is None) is reaches, problem
    if chosen and chosen.get("dev") == "wlan0":
        assert problem == ("this machine reaches 10.42.0.0/24 only through its default route "
                           "(via 192.168.1.1 on wlan0), where a VPC's private addresses are not "
                           "routed")
    if chosen is None:
        assert problem == "this machine has no route to 10.42.0.0/24"


def test_this_machines_route_is_read_from_the_kernel():
    import shutil

    assert shutil.which("ip"), "iproute2 (the lab needs it too)"
    found = net.local_route("127.0.0.0/8")
    assert found is not None
    chosen, defaults = found
    assert chosen is not None and chosen["dev"] == "lo", chosen  # the kernel's choice
    assert net.check_private_route("127.0.0.0/8") is None
    assert all(d["dst"] == "default" for d in defaults)


@pytest.mark.parametrize("route,way", [
    ({"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": "nat-1", "State": "active"}, "nat"),
    ({"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1", "State": "active"}, "igw"),
    ({"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": "nat-1", "State": "blackhole"}, None),
    ({"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"}, None)])
def test_the_way_out_of_a_route_table(route, way):
    assert net.egress([route]) == way


@mock_aws
def test_a_subnet_uses_its_own_table_else_its_vpcs_main_one():
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="a",
                       aws_secret_access_key="b")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    plain = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.0.0/24")["Subnet"]["SubnetId"]
    private = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    assert net.egress(net.subnet_routes(ec2, plain)) is None  # main table: local only
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])[
        "RouteTables"][0]["RouteTableId"]
    ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    assert net.egress(net.subnet_routes(ec2, plain)) == "igw"
    public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.2.0/24")["Subnet"]["SubnetId"]
    nat = ec2.create_nat_gateway(SubnetId=public, AllocationId=ec2.allocate_address(
        Domain="vpc")["AllocationId"])["NatGateway"]["NatGatewayId"]
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    ec2.associate_route_table(RouteTableId=table, SubnetId=private)
    assert net.egress(net.subnet_routes(ec2, private)) == "nat"
    assert net.default_target(net.subnet_routes(ec2, private)) == nat
    assert net.default_target(net.subnet_routes(ec2, plain)) is None  # an internet gateway's
    assert net.subnet_cidr(ec2, private) == "10.42.1.0/24"
