"""The emulated EC2 is as strict as EC2 where that changes what a user sees: here, user data
over 16,384 bytes is refused at launch (moto alone accepts any size). Run in a process of its
own: the patch applies to moto's classes, as in the lab's API server."""

from __future__ import annotations

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
