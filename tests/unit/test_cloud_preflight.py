"""What a real cloud refuses is refused before anything is created: a Terraform older than the
module needs, an SSH key type EC2 does not import; and an EC2 key pair's name is the state's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.errors import ConfigError, ProvisionError
from runner.provision import terraform
from runner.provision.providers.cloud import AWS


@pytest.fixture
def fake_terraform(tmp_path, monkeypatch):
    """A `terraform` on the PATH that reports the version given."""
    def install(version: str) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        tf = bin_dir / "terraform"
        tf.write_text(f"#!/bin/sh\necho '{json.dumps({'terraform_version': version})}'\n")
        tf.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return install


def test_a_terraform_older_than_the_module_needs_is_refused_naming_both(fake_terraform, tmp_path):
    fake_terraform("1.8.5")
    with pytest.raises(ProvisionError) as info:
        terraform.write_root(tmp_path / "tf", "aws", {"cluster_name": "x"})
    message = str(info.value)
    assert "terraform 1.8.5 is too old for the aws module" in message
    assert "needs Terraform >= 1.9" in message and "Nothing was created" in message
    assert not (tmp_path / "tf" / "main.tf.json").exists()
    # the hosts module (the lab, existing machines) declares 1.5, which 1.8 satisfies
    terraform.write_root(tmp_path / "tf", "hosts", {"cluster_name": "x"})
    assert (tmp_path / "tf" / "main.tf.json").exists()


def test_the_modules_declare_the_versions_the_check_reads():
    assert terraform.required_version("aws") == (1, 9)
    assert terraform.required_version("gcp") == (1, 9)
    assert terraform.required_version("azure") == (1, 9)
    assert terraform.required_version("hosts") == (1, 5)


class _Spec:
    def __init__(self, tmp_path: Path, key: Path):
        from runner.config import SSHSpec

        self.source = tmp_path / "aws.yaml"
        self.state_dir = tmp_path / "state"
        self.ssh = SSHSpec(private_key=key)
        self.name = "c"
        self.terraform = {}


def _aws(tmp_path: Path, public_line: str) -> AWS:
    key = tmp_path / "id"
    key.write_text("private\n")
    Path(str(key) + ".pub").write_text(public_line + "\n")
    provider = AWS.__new__(AWS)
    provider.spec = _Spec(tmp_path, key)
    return provider


@pytest.mark.parametrize("line", [
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= me@host",
    "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t me@host",
])
def test_a_key_type_ec2_does_not_import_is_refused_before_terraform(tmp_path, line):
    with pytest.raises(ConfigError) as info:
        _aws(tmp_path, line).public_key()
    assert "EC2 does not import" in str(info.value) and "ssh-keygen -t ed25519" in str(info.value)


def test_ed25519_and_rsa_keys_are_taken(tmp_path):
    assert _aws(tmp_path, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me").public_key().startswith("ssh-ed")
    assert _aws(tmp_path, "ssh-rsa AAAAB3NzaC1yc2E= me").public_key().startswith("ssh-rsa")


def test_the_key_pair_name_is_the_states_own_and_kept(tmp_path):
    first = _aws(tmp_path, "ssh-ed25519 AAAA me")
    suffix = first.key_pair_suffix()
    assert suffix.startswith("-") and len(suffix) == 9
    assert first.key_pair_suffix() == suffix  # kept: the key pair is never renamed
    (tmp_path / "b").mkdir()
    other = _aws(tmp_path / "b", "ssh-ed25519 AAAA me")
    assert other.key_pair_suffix() != suffix  # another state, another name


def test_a_cluster_made_before_the_suffix_keeps_its_key_pair_name(tmp_path):
    provider = _aws(tmp_path, "ssh-ed25519 AAAA me")
    tf = provider.state_dir / "terraform"
    tf.mkdir(parents=True)
    (tf / "terraform.tfstate").write_text(json.dumps(
        {"resources": [{"type": "aws_key_pair", "name": "this"}]}))
    assert provider.key_pair_suffix() == ""


def test_private_addresses_from_a_laptop_are_refused_before_anything_is_created(tmp_path,
                                                                               monkeypatch):
    from runner import aws_network

    provider = _aws(tmp_path, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host")
    provider.spec.terraform = {"vpc_cidr": "10.42.0.0/16", "use_public_ip": False}
    home = {"dst": "default", "gateway": "192.168.1.1", "dev": "wlan0"}
    laptop = ({"dst": "10.42.0.1", "gateway": "192.168.1.1", "dev": "wlan0"}, [home])
    monkeypatch.setattr(aws_network, "local_route", lambda cidr: laptop)
    with pytest.raises(ConfigError) as info:
        provider._check_route(None, "aws.yaml: terraform.")
    message = str(info.value)
    assert message.startswith("aws.yaml: terraform.use_public_ip is false, so SSH dials the VMs' "
                              "private addresses in 10.42.0.0/24, and this machine reaches "
                              "10.42.0.0/24 only through its default route"), message
    assert "Set terraform.use_public_ip: true" in message and "Nothing was created" in message
    # from inside the VPC (or over a VPN routing it), and with public addresses, it goes on
    monkeypatch.setattr(aws_network, "local_route",
                        lambda cidr: ({"dst": "10.42.0.1", "dev": "tun0"}, [home]))
    provider._check_route(None, "aws.yaml: terraform.")
    monkeypatch.setattr(aws_network, "local_route", lambda cidr: laptop)
    provider.spec.ssh = provider.spec.ssh.model_copy(update={"require_private_route": False})
    provider._check_route(None, "aws.yaml: terraform.")  # the file says the gateway routes it
    provider.spec.ssh = provider.spec.ssh.model_copy(update={"require_private_route": True})
    provider.spec.terraform["use_public_ip"] = True
    provider._check_route(None, "aws.yaml: terraform.")


def test_a_role_that_may_not_describe_offerings_is_warned_not_stopped(tmp_path, monkeypatch):
    import boto3
    from botocore.exceptions import ClientError

    from runner import aws_network

    class Denied:
        def get_paginator(self, name):
            raise ClientError({"Error": {"Code": "UnauthorizedOperation",
                                         "Message": "not allowed"}}, name)

    class Session:
        def __init__(self, region_name=None):
            pass

        def client(self, service):
            return Denied()

    monkeypatch.setattr(boto3.session, "Session", Session)
    monkeypatch.setattr(aws_network, "local_route",
                        lambda cidr: ({"dst": "10.42.0.1", "dev": "ens5"}, []))
    provider = _aws(tmp_path, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host")
    provider.spec.terraform = {"region": "us-east-1"}
    provider.spec.environment = {}
    said = []
    provider._check_before_creating(said.append)
    assert any("WARNING: not checked before creating anything: the zone and vCPU quota for "
               "m6i.large (UnauthorizedOperation" in line for line in said), said
    # any other error stops `up` before anything is created
    Denied.get_paginator = lambda self, name: (_ for _ in ()).throw(  # type: ignore[method-assign]
        ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "bad"}}, name))
    with pytest.raises(ProvisionError, match="Nothing was created"):
        provider._check_before_creating(said.append)
