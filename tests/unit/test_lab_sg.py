"""Security-group ingress and egress rules -> the nftables ruleset an instance host enforces;
refused boots."""

from __future__ import annotations

from runner.lab import nat
from runner.lab.instances import host_for, refuse_reason
from runner.lab.security_groups import instance_groups, render_sg_ruleset


def rules(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line.startswith(("ip ", "ip6 ", "meta l4proto"))]


def test_defaults_drop_everything_but_established_loopback_and_icmp():
    text = render_sg_ruleset([], {})
    assert "policy drop;" in text and "ct state established,related accept" in text
    assert 'iif "lo" accept' in text
    assert rules(text) == ["meta l4proto { icmp, ipv6-icmp } accept"]
    # an atomic replace: declare, delete, define, in one `nft -f` transaction
    assert text.startswith("table inet daskfleet_sg\ndelete table inet daskfleet_sg\n")


def test_cidr_rule_single_port():
    perm = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "198.19.0.1/32"}]}
    assert rules(render_sg_ruleset([perm], {}))[1:] == ["ip saddr 198.19.0.1/32 tcp dport 22 accept"]


def test_group_reference_uses_the_running_members_and_a_port_range():
    perm = {"IpProtocol": "tcp", "FromPort": 8786, "ToPort": 8790,
            "UserIdGroupPairs": [{"GroupId": "sg-1"}]}
    out = rules(render_sg_ruleset([perm], {"sg-1": ["198.19.0.10", "198.19.0.9"]}))
    assert out[1:] == ["ip saddr { 198.19.0.9, 198.19.0.10 } tcp dport 8786-8790 accept"]
    # a group with no running member allows nobody
    assert rules(render_sg_ruleset([perm], {}))[1:] == []


def test_protocol_minus_one_is_everything_and_udp_and_ipv6():
    perms = [
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        {"IpProtocol": "udp", "FromPort": 0, "ToPort": 65535, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
        {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
    ]
    assert rules(render_sg_ruleset(perms, {}))[1:] == [
        "ip saddr 10.0.0.0/8 accept", "ip6 saddr ::/0 meta l4proto udp accept"]


def test_refused_instances():
    ok = {"PrivateIpAddress": "198.19.0.4"}
    assert refuse_reason(ok, "x86_64", "198.19.0.0/24") is None
    assert "arm64" in refuse_reason(ok, "arm64", "198.19.0.0/24")
    for ip in ("198.19.0.1", "198.19.0.2", "198.19.0.3", "198.19.0.255"):
        assert "reserves" in refuse_reason({"PrivateIpAddress": ip}, "x86_64", "198.19.0.0/24")
    # any subnet of the lab's VPC range, each with its own reserved addresses
    assert refuse_reason({"PrivateIpAddress": "198.19.2.4"}, "x86_64", "198.19.2.0/24") is None
    assert "reserves" in refuse_reason({"PrivateIpAddress": "198.19.2.3"}, "x86_64",
                                       "198.19.2.0/24")
    assert "outside" in refuse_reason({"PrivateIpAddress": "172.31.0.5"}, "x86_64",
                                      "172.31.0.0/24")
    assert "no subnet" in refuse_reason(ok, "x86_64", None)


def test_a_nat_gateways_host_names_fit_ifnamsiz_and_it_forwards_only_out_of_the_vpc():
    netns, link = nat.names("nat-0123456789abcdef0")
    assert netns == "dfec2-nat-0123456789abcdef0" and netns.startswith("dfec2-")  # `lab down`
    assert len(link) <= 15 and link.startswith("dfe")
    rules = nat.forward_ruleset()
    assert "policy drop;" in rules and "ct state established,related accept" in rules
    assert "ip saddr 198.19.0.0/16 ip daddr != 198.19.0.0/16 accept" in rules


def test_instance_host_names_fit_ifnamsiz():
    h = host_for("i-0123456789abcdef0", "198.19.0.4")
    assert h.netns == "dfec2-0123456789abcdef0" and len(h.veth) <= 15 and h.user == "admin"


def test_instance_groups_come_from_the_instance_and_its_interfaces():
    groups = [{"GroupId": "sg-2"}, {"GroupId": "sg-1"}]
    inst = {"SecurityGroups": [], "NetworkInterfaces": [{"Groups": groups}]}
    assert instance_groups(inst) == ["sg-1", "sg-2"]


def test_egress_rules_are_enforced_as_well_when_given():
    # the aws module's group: its default allow-all egress removed (as Terraform removes it),
    # anything to the group's members and HTTP(S) out
    egress = [{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-1"}]},
              {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
               "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    text = render_sg_ruleset([], {"sg-1": ["198.19.0.5"]}, egress)
    output = text.split("chain output {", 1)[1]
    assert "type filter hook output priority 0; policy drop;" in output
    assert "ct state established,related accept" in output and 'oif "lo" accept' in output
    assert rules(output)[1:] == ["ip daddr { 198.19.0.5 } accept",
                                 "ip daddr 0.0.0.0/0 tcp dport 443 accept"]
    assert "chain output" not in render_sg_ruleset([], {})  # no egress given: not enforced


def test_this_machine_stays_outside_the_vpc_unless_the_vpn_routes_it_from_its_address():
    from runner.lab.ec2 import VPC_ROUTER, outside_vpc_ruleset

    def output_rules(ruleset: str) -> list[str]:
        chain = ruleset.split("chain output {", 1)[1].split("}", 1)[0]
        return [line.strip() for line in chain.splitlines() if line.strip()][1:]

    outside = outside_vpc_ruleset()
    assert output_rules(outside) == ["ip daddr 198.19.0.0/16 drop"]
    assert f"ip daddr {VPC_ROUTER} drop" in outside.split("chain input {", 1)[1]
    # the router forwards nothing of a VPC's: only what is sent to the bridge's own MAC (routed
    # through this machine) is dropped, never what the bridge carries from host to host
    forward = outside.split("chain forward {", 1)[1]
    assert "ether daddr 02:df:00:00:00:01 ip saddr 198.19.0.0/16 drop" in forward
    assert "ether daddr 02:df:00:00:00:01 ip daddr 198.19.0.0/16 drop" in forward
    # over the VPN: only what leaves from the VPN's address, and only into that VPC, goes in
    inside = output_rules(outside_vpc_ruleset(("198.19.2.4", "198.19.0.0/16")))
    assert inside == ["ip saddr 198.19.2.4 ip daddr 198.19.0.0/16 accept",
                      "ip daddr 198.19.0.0/16 drop"]


# DescribeRouteTables' and DescribeNatGateways' answers for a VPC with a public subnet (its own
# table to an internet gateway), a private one (its own table to the NAT gateway) and one left
# on the main table (local only)
TABLES = [
    {"VpcId": "vpc-1", "Associations": [{"Main": True}],
     "Routes": [{"DestinationCidrBlock": "198.19.0.0/16", "GatewayId": "local"}]},
    {"VpcId": "vpc-1", "Associations": [{"SubnetId": "subnet-pub", "Main": False}],
     "Routes": [{"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1", "State": "active"}]},
    {"VpcId": "vpc-1", "Associations": [{"SubnetId": "subnet-priv", "Main": False}],
     "Routes": [{"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": "nat-1",
                 "State": "active"}]},
]


def _nat(nat_id="nat-1", subnet="subnet-pub", state="available", public="198.18.128.20"):
    return {"NatGatewayId": nat_id, "SubnetId": subnet, "VpcId": "vpc-1", "State": state,
            "NatGatewayAddresses": [{"PrivateIp": "198.19.1.4", "PublicIp": public}]}


def test_only_a_nat_gateway_that_works_on_aws_gets_a_host():
    from runner.lab.instances import working_nats

    assert working_nats([_nat()], TABLES) == {"nat-1": ("198.19.1.4", "198.18.128.20")}
    # in a subnet with no route to an internet gateway; deleted; without an Elastic IP
    assert working_nats([_nat(subnet="subnet-priv")], TABLES) == {}
    assert working_nats([_nat(subnet="subnet-other")], TABLES) == {}  # main table: local only
    assert working_nats([_nat(state="deleted")], TABLES) == {}
    assert working_nats([_nat(public=None)], TABLES) == {}


def test_an_instance_goes_out_through_the_nat_its_subnet_routes_to_else_the_vpc_router():
    from runner.lab.ec2 import VPC_ROUTER
    from runner.lab.instances import instance_gateway

    private = {"SubnetId": "subnet-priv", "VpcId": "vpc-1"}
    assert instance_gateway(private, [_nat()], TABLES) == "198.19.1.4"
    # the NAT gateway gone from the API: nowhere out (the router forwards nothing)
    assert instance_gateway(private, [], TABLES) == VPC_ROUTER
    assert instance_gateway({"SubnetId": "subnet-pub", "VpcId": "vpc-1"}, [_nat()],
                            TABLES) == VPC_ROUTER
    assert instance_gateway({"SubnetId": "subnet-other", "VpcId": "vpc-1"}, [_nat()],
                            TABLES) == VPC_ROUTER
