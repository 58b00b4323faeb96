"""Zones and vCPU quotas, checked before anything is created: the pure decisions, and the calls
against the emulated EC2, which refuses as EC2 does (a type its subnet's zone does not offer,
launches past the vCPU quota) and picks the worst zone when none is given. Each run is in a
process of its own: the lab's patches apply to moto's classes, as in its API server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runner import aws_capacity as cap
from runner.errors import ConfigError

OFFERED = {"m6i.large": {"us-east-1a", "us-east-1b", "us-east-1f"},
           "t3.small": {"us-east-1a", "us-east-1e", "us-east-1f"}}


def test_the_first_zone_offering_every_type_is_chosen_and_a_wanted_one_checked():
    assert cap.choose_zone(OFFERED, None, "terraform.availability_zone", "us-east-1") == \
        "us-east-1a"
    assert cap.choose_zone(OFFERED, "us-east-1f", "k", "us-east-1") == "us-east-1f"
    with pytest.raises(ConfigError) as e:
        cap.choose_zone(OFFERED, "us-east-1e", "terraform.availability_zone", "us-east-1")
    msg = str(e.value)
    assert msg.startswith("terraform.availability_zone: us-east-1e does not offer m6i.large")
    assert "offer m6i.large, t3.small: us-east-1a, us-east-1f" in msg, msg


def test_a_type_the_region_lacks_is_named():
    with pytest.raises(ConfigError, match="p9.huge is not offered in us-east-1"):
        cap.choose_zone({"p9.huge": set(), "m6i.large": {"us-east-1a"}}, None, "k", "us-east-1")
    with pytest.raises(ConfigError, match="no zone of us-east-1 offers a.x, b.x together"):
        cap.choose_zone({"a.x": {"z1"}, "b.x": {"z2"}}, None, "k", "us-east-1")


@pytest.mark.parametrize("itype,fam,std", [("m6i.large", "m", True), ("t3.micro", "t", True),
                                           ("inf2.xlarge", "inf", False), ("g5.xlarge", "g", False),
                                           ("x2idn.16xlarge", "x", False), ("c7gn.large", "c", True)])
def test_families_and_the_standard_bucket(itype, fam, std):
    assert cap.family(itype) == fam and cap.standard(itype) is std


def test_the_quota_shortfall():
    assert cap.quota_shortfall(32, 26, 6) == 0
    assert cap.quota_shortfall(32, 28, 6) == 2
    assert cap.quota_shortfall(5, 0, 6) == 1


SCRIPT = r"""
import json, sys, boto3
from pathlib import Path
from botocore.exceptions import ClientError
from moto import mock_aws
from runner.lab.ec2_strict import as_ec2_does
from runner import aws_capacity as cap
from runner.errors import ConfigError

lab = Path(sys.argv[1])
(lab / "cloud").mkdir(parents=True)
(lab / "cloud" / "vcpu-quota.json").write_text(json.dumps({"on-demand": 6}))
as_ec2_does(lab)
out = {}
kw = dict(region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
with mock_aws():
    ec2, quotas = boto3.client("ec2", **kw), boto3.client("service-quotas", **kw)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    picked = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.0.0/24")["Subnet"]
    out["picked"] = picked["AvailabilityZone"]
    def launch(subnet, itype="m6i.large", n=1):
        try:
            ec2.run_instances(ImageId=image, MinCount=n, MaxCount=n, InstanceType=itype,
                              SubnetId=subnet)
            return "launched"
        except ClientError as e:
            return e.response["Error"]["Code"] + ": " + e.response["Error"]["Message"]
    out["in_picked"] = launch(picked["SubnetId"])
    zone = cap.choose_zone(cap.offered_zones(ec2, ["m6i.large"]), None, "k", "us-east-1")
    out["chosen"] = zone
    good = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone=zone)["Subnet"]
    out["in_chosen"] = launch(good["SubnetId"], n=2)  # 4 of 6 vCPUs
    try:
        cap.check_quota(ec2, quotas, {"on-demand": {"m6i.large": 2}}, "terraform.worker_count")
        out["check"] = "fits"
    except ConfigError as e:
        out["check"] = str(e)
    out["check_one"] = cap.check_quota(ec2, quotas, {"on-demand": {"m6i.large": 1}}, "k")
    out["over"] = launch(good["SubnetId"], n=2)
    out["unchecked"] = cap.check_quota(ec2, quotas, {"on-demand": {"g5.xlarge": 1}}, "k")
print(json.dumps(out))
"""


def test_the_emulated_ec2_refuses_as_ec2_does_and_the_checks_see_it_first(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "lab")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["picked"] == "us-east-1e"  # the zone with the fewest types, as AWS might pick
    assert out["in_picked"].startswith(
        "Unsupported: Your requested instance type (m6i.large) is not supported in your "
        "requested Availability Zone (us-east-1e)"), out
    assert out["chosen"] == "us-east-1a"
    assert out["in_chosen"] == "launched"
    assert out["check"].startswith("terraform.worker_count: 2 x m6i.large (2 vCPUs) need 4 "
                                   "vCPUs, and the account's on-demand standard vCPU quota "
                                   "(L-1216C47A) is 6, 4 of them in use: 2 short"), out
    assert out["check_one"] == []  # 2 more vCPUs fit
    assert out["over"].startswith("VcpuLimitExceeded: You have requested more vCPU capacity "
                                  "than your current vCPU limit of 6"), out
    assert out["unchecked"] and "g5.xlarge" in out["unchecked"][0], out
