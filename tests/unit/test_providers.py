"""Each provider's contract, without a cloud: the Terraform variables it passes, the addresses it
picks for SSH and for Dask, how the client reaches the scheduler, and what it refuses before
anything is created."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from runner.cluster.hosts import Host
from runner.cluster.process_settings import DaskSettings, as_user
from runner.cluster.processes import RemoteProcess
from runner.config import load_cluster
from runner.errors import ConfigError, ProvisionError
from runner.provision import hostkeys
from runner.provision.providers import for_spec

ROWS = [
    {"name": "scheduler", "role": "scheduler", "user": "admin", "port": 22,
     "private_address": "10.42.0.10", "public_address": "203.0.113.10"},
    {"name": "worker-1", "role": "worker", "user": "admin", "port": 22,
     "private_address": "10.42.0.11", "public_address": None},
]


@pytest.fixture
def key(tmp_path: Path) -> Path:
    k = tmp_path / "id_ed25519"
    keys = hostkeys.ensure(tmp_path / "k", ["me"])
    k.write_text(keys["me"]["private_key"])
    (tmp_path / "id_ed25519.pub").write_text(keys["me"]["public_key"] + "\n")
    return k


def aws_file(tmp_path: Path, key: Path, **terraform) -> Path:
    data = {"name": "c1", "provider": "aws", "ssh": {"private_key": str(key)},
            "environment": {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"},
            "terraform": {"region": "eu-west-1", "admin_cidr": "203.0.113.7/32", **terraform},
            "dask": {"scheduler_port": 9786, "worker_port_range": "41000:41049"}}
    path = tmp_path / "aws.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_aws_passes_key_user_host_keys_and_ports_to_the_module(tmp_path, key, monkeypatch):
    monkeypatch.setenv("DASKFLEET_STATE_DIR", str(tmp_path / "state"))
    spec = load_cluster(aws_file(tmp_path, key, worker_count=3))
    provider = for_spec(spec)
    v = provider.terraform_variables({})
    assert v["ssh_user"] == "admin"  # the Debian AMI's user, not root
    assert v["ssh_public_key"] == (tmp_path / "id_ed25519.pub").read_text().strip()
    assert sorted(v["host_keys"]) == ["scheduler", "worker-1", "worker-2", "worker-3"]
    assert v["host_keys"]["scheduler"]["public_key"].startswith("ssh-ed25519 ")
    assert "OPENSSH PRIVATE KEY" in v["host_keys"]["scheduler"]["private_key"]
    assert v["dask_ports"] == {"scheduler": 9786, "dashboard": 8787, "worker_from": 41000,
                               "worker_to": 41049, "nanny_from": 40100, "nanny_to": 40199}
    assert v["region"] == "eu-west-1" and "ami_id" not in v
    # Keys are generated once: a replaced VM comes back with the same host key.
    assert provider.terraform_variables({})["host_keys"] == v["host_keys"]
    # The image found by the first apply is pinned on later ones.
    assert provider.terraform_variables({"image": "ami-0abc"})["ami_id"] == "ami-0abc"
    assert provider.terraform_env() == {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}
    assert provider.tunnel is True


def test_a_user_image_wins_over_the_recorded_one(tmp_path, key):
    provider = for_spec(load_cluster(aws_file(tmp_path, key, ami_id="ami-0mine")))
    assert provider.terraform_variables({"image": "ami-0abc"})["ami_id"] == "ami-0mine"
    assert provider.image_python() is None  # unknown image: checked over SSH instead


def test_cloud_hosts_ssh_to_private_addresses_unless_public_is_asked(tmp_path, key):
    private = for_spec(load_cluster(aws_file(tmp_path, key))).hosts_from_output({"hosts": ROWS})
    assert [(h.address, h.dask_address, h.user) for h in private] == [
        ("10.42.0.10", "10.42.0.10", "admin"), ("10.42.0.11", "10.42.0.11", "admin")]
    public = for_spec(load_cluster(aws_file(tmp_path, key, use_public_ip=True)))
    with pytest.raises(ProvisionError, match="worker-1 has no public address"):
        public.hosts_from_output({"hosts": ROWS})
    sched = public.hosts_from_output({"hosts": ROWS[:1]})[0]
    # SSH goes to the public address, Dask binds to and is dialled at the private one.
    assert (sched.address, sched.dask_address) == ("203.0.113.10", "10.42.0.10")
    proc = RemoteProcess(sched, "scheduler", sched, DaskSettings())
    assert proc.command()[proc.command().index("--host") + 1] == "10.42.0.10"
    assert proc.scheduler_address == "tls://10.42.0.10:8786"


def test_non_root_logins_run_dask_through_sudo_and_root_through_runuser():
    admin = Host("n", "10.0.0.1", "worker", user="admin")
    root = Host("n", "10.0.0.1", "worker")
    assert as_user(admin, "dask-c", "echo hi").startswith("sudo -n -- sh -c ")
    assert "runuser -u dask-c -- bash -c 'echo hi'" in as_user(root, "dask-c", "echo hi")
    assert not as_user(root, "dask-c", "echo hi").startswith("sudo")


@pytest.mark.parametrize("terraform, message", [
    ({"ssh_public_key": "ssh-ed25519 AAAA"}, "terraform.ssh_public_key is set by daskfleet"),
    ({"host_keys": {}}, "terraform.host_keys is set by daskfleet"),
])
def test_variables_daskfleet_sets_are_refused_in_the_file(tmp_path, key, terraform, message):
    with pytest.raises(ConfigError, match=message):
        for_spec(load_cluster(aws_file(tmp_path, key, **terraform))).terraform_variables({})


def test_a_missing_public_key_is_named_with_the_command_that_makes_it(tmp_path, key):
    (tmp_path / "id_ed25519.pub").unlink()
    provider = for_spec(load_cluster(aws_file(tmp_path, key)))
    with pytest.raises(ConfigError, match=r"id_ed25519\.pub is missing.*ssh-keygen -y -f"):
        provider.before_apply(print)


def test_admin_cidr_is_required_before_terraform_runs(tmp_path, key):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "c1", "provider": "aws",
                                    "ssh": {"private_key": str(key)},
                                    "terraform": {"region": "eu-west-1"}}))
    with pytest.raises(ConfigError, match="needs terraform.admin_cidr"):
        load_cluster(path)


def test_another_python_is_refused_before_any_vm_exists(tmp_path, key, monkeypatch):
    provider = for_spec(load_cluster(aws_file(tmp_path, key)))
    monkeypatch.setattr(provider, "default_image_python", "3.99")
    with pytest.raises(ProvisionError, match=rf"runs Python 3.99, this machine runs Python "
                                             rf"{sys.version_info[0]}\.{sys.version_info[1]}.*"
                                             "Nothing was created"):
        provider.before_apply(print)


def test_lab_and_hosts_dial_the_scheduler_directly(tmp_path):
    spec = load_cluster(Path(__file__).parents[2] / "clusters" / "lab.yaml")
    assert for_spec(spec).tunnel is False and for_spec(spec).module == "hosts"


def test_known_hosts_entries_are_replaced_and_others_kept(tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("other.example ssh-ed25519 AAAAother\n10.0.0.5 ssh-ed25519 AAAAold\n")
    hostkeys.write_known_hosts(kh, {"10.0.0.5": "ssh-ed25519 AAAAnew daskfleet-scheduler",
                                    "[10.0.0.6]:2222": "ssh-ed25519 AAAAsix"})
    lines = kh.read_text().splitlines()
    assert lines == ["other.example ssh-ed25519 AAAAother", "10.0.0.5 ssh-ed25519 AAAAnew",
                     "[10.0.0.6]:2222 ssh-ed25519 AAAAsix"]


def test_every_shipped_cloud_example_is_valid(tmp_path, monkeypatch):
    # The examples name ~/.ssh/id_ed25519: give them one in a home of their own.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_ed25519").write_text("x")
    for name in ("aws.example.yaml", "gcp.example.yaml", "azure.example.yaml"):
        spec = load_cluster(Path(__file__).parents[2] / "clusters" / name)
        provider = for_spec(spec)
        _, known = provider.ssh_paths()
        assert known == spec.state_dir / "known_hosts", name  # written by daskfleet
        assert provider.user != "root", name


def test_an_endpoint_that_does_not_answer_fails_before_terraform(tmp_path, key):
    import socket

    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = aws_file(tmp_path, key)
    data = yaml.safe_load(path.read_text())
    data["environment"]["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    path.write_text(yaml.safe_dump(data))
    provider = for_spec(load_cluster(path))
    with pytest.raises(ProvisionError, match=rf"http://127.0.0.1:{port} \(environment."
                                             r"AWS_ENDPOINT_URL in .*lab up --cloud aws.*"
                                             "Nothing was created"):
        provider.before_apply(print)


def test_the_machines_an_apply_will_leave_are_known_before_it(tmp_path, key):
    """So `up` retires the workers of the machines a lower worker_count removes, before
    Terraform removes them (their data moves to the workers that stay)."""
    three = for_spec(load_cluster(aws_file(tmp_path, key, worker_count=3)))
    one = for_spec(load_cluster(aws_file(tmp_path, key, worker_count=1)))
    assert three.planned_names() == ["scheduler", "worker-1", "worker-2", "worker-3"]
    recorded = [Host(n, f"10.0.0.{i}", "worker") for i, n in enumerate(three.planned_names())]
    going = [h.name for h in recorded if h.name not in one.planned_names()]
    assert going == ["worker-2", "worker-3"]
