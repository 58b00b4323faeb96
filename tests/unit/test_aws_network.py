"""A cluster on private addresses needs a route to them from the control machine (not its
default route) and, for an ephemeral run in an existing subnet, a NAT for the instances' way
out: the decisions, and the route table lookup against moto."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from runner import aws_network as net

LAPTOP = [{"dst": "default", "gateway": "192.168.1.1", "dev": "wlan0"},
          {"dst": "192.168.1.0/24", "dev": "wlan0"}]
IN_VPC = [{"dst": "default", "gateway": "10.42.0.1", "dev": "ens5"},
          {"dst": "10.42.0.0/24", "dev": "ens5"}]
VPN = LAPTOP + [{"dst": "10.42.0.0/16", "dev": "tun0"}]


@pytest.mark.parametrize("routes,reaches", [(LAPTOP, False), (IN_VPC, True), (VPN, True),
                                            ([], False)])
def test_only_a_route_other_than_the_default_one_reaches_private_addresses(routes, reaches):
    problem = net.private_route_problem(routes, "10.42.0.0/24")
    assert (problem is None) is reaches, problem
    if routes is LAPTOP:
        assert problem == ("this machine reaches 10.42.0.0/24 only through its default route "
                           "(via 192.168.1.1 on wlan0), where a VPC's private addresses are not "
                           "routed")


def test_the_most_specific_route_wins_and_unknown_routes_say_nothing():
    assert net.best_route(VPN, "10.42.7.0/24")["dev"] == "tun0"
    assert net.best_route(IN_VPC, "10.42.0.0/24")["dev"] == "ens5"
    assert net.private_route_problem(None, "10.42.0.0/24") is None  # no `ip`: cannot tell


def test_local_routes_reads_this_machines_table():
    import shutil

    assert shutil.which("ip"), "iproute2 (the lab needs it too)"
    routes = net.local_routes()
    assert isinstance(routes, list) and all("dst" in r for r in routes), routes


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
    assert net.subnet_cidr(ec2, private) == "10.42.1.0/24"
