"""`daskfleet gc` against moto's in-process EC2 (no server, no network): an expired run's
instances, group, subnet and VPC go; a run still within its lifetime and resources daskfleet did
not tag stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runner.ephemeral import aws, teardown
from runner.ephemeral import tags as T

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
REGION = "eu-west-1"


@pytest.fixture
def ec2(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with moto.mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def make_run(ec2, run_id: str, created: datetime, lifetime_s: float, cidr: str) -> dict:
    made = aws.Made()
    tags = T.run_tags("c1", run_id, created, lifetime_s)
    aws.make_network(ec2, cidr, cidr, tags, made, "us-east-1a")
    aws.make_group(ec2, made.vpc_id, f"df-{run_id}", "203.0.113.7/32", (8786, 8787), tags, made)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    [inst] = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                               SubnetId=made.subnet_id, SecurityGroupIds=[made.group_id],
                               TagSpecifications=[{"ResourceType": "instance",
                                                   "Tags": T.as_aws(tags)}])["Instances"]
    return {"vpc": made.vpc_id, "subnet": made.subnet_id, "group": made.group_id,
            "instance": inst["InstanceId"]}


def test_gc_removes_expired_runs_only(ec2, monkeypatch):
    monkeypatch.setattr(aws.time, "sleep", lambda s: None)  # moto terminates at once
    old = make_run(ec2, "20260101-old", NOW - timedelta(hours=3), 3600, "10.1.0.0/24")
    young = make_run(ec2, "20260102-young", NOW - timedelta(minutes=10), 3600, "10.2.0.0/24")
    untagged = ec2.create_vpc(CidrBlock="10.3.0.0/24")["Vpc"]["VpcId"]
    said: list[str] = []

    removed, kept = teardown.gc(ec2, NOW, None, said.append)

    assert kept == ["20260102-young"]
    assert any("run 20260101-old" in line and "expired" in line for line in said), said
    assert {f"instance {old['instance']}", f"subnet {old['subnet']}", f"vpc {old['vpc']}"} <= \
        set(removed), removed
    assert any(r.startswith(f"security group {old['group']}") for r in removed), removed
    vpcs = {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]}
    assert old["vpc"] not in vpcs and {young["vpc"], untagged} <= vpcs
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
              for i in r["Instances"]}
    assert states[old["instance"]] == "terminated" and states[young["instance"]] == "running"


def test_gc_older_than_removes_a_run_within_its_lifetime(ec2, monkeypatch):
    monkeypatch.setattr(aws.time, "sleep", lambda s: None)
    young = make_run(ec2, "20260102-young", NOW - timedelta(minutes=40), 7200, "10.2.0.0/24")
    removed, kept = teardown.gc(ec2, NOW, 30 * 60, lambda line: None)
    assert kept == [] and f"vpc {young['vpc']}" in removed
    # a second gc finds nothing left to remove
    assert teardown.gc(ec2, NOW, 30 * 60, lambda line: None) == ([], [])
