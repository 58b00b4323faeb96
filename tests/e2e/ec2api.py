"""The emulated EC2's API, as the e2e tests inspect it (imported by the tests of this folder)."""

from __future__ import annotations


def ec2():
    """A boto3 EC2 client for `daskfleet lab up --cloud aws` (127.0.0.1 only, test credentials)."""
    import boto3

    return boto3.client("ec2", endpoint_url="http://127.0.0.1:4566", region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")
