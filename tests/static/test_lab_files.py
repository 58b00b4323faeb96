"""The emulated EC2's cluster file is the example a user copies, changed only where the emulator
or this machine needs it: so what the e2e tier proves on it is what the user will run."""

from __future__ import annotations

from pathlib import Path

import yaml

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"

# What aws-lab.yaml may change, and why
EMULATOR_ONLY = {
    "name": "its own cluster",
    "environment.AWS_ENDPOINT_URL": "the emulated EC2 on loopback",
    "environment.AWS_ACCESS_KEY_ID": "test credentials",
    "environment.AWS_SECRET_ACCESS_KEY": "test credentials",
    "environment.AWS_EC2_METADATA_DISABLED": "never the metadata service of this machine",
    "environment.TF_CLI_CONFIG_FILE": "Terraform's local provider mirror (no internet here)",
    "ssh.private_key": "the lab's key",
    "terraform.region": "the region the emulator serves",
    "terraform.admin_cidr": "the control machine's address (every user's differs)",
    "terraform.vpc_cidr": "a VPC inside the lab's range",
    "terraform.worker_count": "a cluster two cores can run",
    "dask.threads_per_worker": "a cluster two cores can run",
}


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_aws_lab_is_the_example_but_for_what_the_emulator_needs():
    example = _flat(yaml.safe_load((CLUSTERS / "aws.example.yaml").read_text()))
    lab = _flat(yaml.safe_load((CLUSTERS / "aws-lab.yaml").read_text()))
    changed = {k for k in set(example) | set(lab) if example.get(k) != lab.get(k)}
    assert changed - set(EMULATOR_ONLY) == set(), {k: (example.get(k), lab.get(k))
                                                   for k in changed - set(EMULATOR_ONLY)}
    assert example["terraform.use_public_ip"] is True  # the mode a laptop needs, run in e2e


# What aws-ephemeral-lab.yaml may change, and why
EPHEMERAL_EMULATOR_ONLY = {
    "name": "its own cluster",
    "environment.AWS_ENDPOINT_URL": "the emulated EC2 on loopback",
    "environment.AWS_ACCESS_KEY_ID": "test credentials",
    "environment.AWS_SECRET_ACCESS_KEY": "test credentials",
    "environment.AWS_EC2_METADATA_DISABLED": "never the metadata service of this machine",
    "ephemeral.region": "the region the emulator serves",
    "ephemeral.admin_cidr": "the control machine's address (every user's differs)",
    "ephemeral.network.vpc_cidr": "a VPC inside the lab's range",
    "ephemeral.network.subnet_cidr": "a VPC inside the lab's range",
    "ephemeral.image.owner": "Debian's image, which the lab gives a docker stand-in",
    "ephemeral.image.name": "Debian's image, which the lab gives a docker stand-in",
    "ephemeral.bootstrap": "the stand-in needs no Docker install",
    "ephemeral.worker_instance_type": "a cluster two cores can run",
    "ephemeral.workers": "a cluster two cores can run",
    "ephemeral.filesystem_size": "a cluster this machine's disk holds",
    "ephemeral.max_lifetime": "the e2e tier's watchdog deadlines",
    "ephemeral.idle_timeout": "the e2e tier's watchdog deadlines",
    "ephemeral.ready_timeout": "a failing boot fails the e2e tier in minutes",
    "dask.threads_per_worker": "a cluster two cores can run",
}


def test_aws_ephemeral_lab_is_the_example_but_for_what_the_emulator_needs():
    example = _flat(yaml.safe_load((CLUSTERS / "aws-ephemeral.example.yaml").read_text()))
    lab = _flat(yaml.safe_load((CLUSTERS / "aws-ephemeral-lab.yaml").read_text()))
    changed = {k for k in set(example) | set(lab) if example.get(k) != lab.get(k)}
    assert changed - set(EPHEMERAL_EMULATOR_ONLY) == set(), {
        k: (example.get(k), lab.get(k)) for k in changed - set(EPHEMERAL_EMULATOR_ONLY)}
    # the mode a laptop needs, run in e2e: a VPC made for the run, with public addresses
    assert "ephemeral.network.subnet_id" not in example and "ephemeral.network.vpc_cidr" in example
