"""What the cloud modules compute from their inputs, evaluated by Terraform itself, offline.

Each module keeps the values that depend on its inputs alone in locals.tf (no resource, no
provider), so variables.tf + locals.tf form a root module that `terraform apply` evaluates
without downloading anything: the AWS image architecture, the cloud-init user data (AWS, Azure)
and the GCP startup script that install daskfleet's SSH host keys, and the input validations.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPO = Path(__file__).resolve().parents[2]
MODULES = REPO / "terraform" / "modules"
CLOUD = ["aws", "gcp", "azure"]
TEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey test"
REQUIRED_VARS = {
    "aws": {"cluster_name": "t", "region": "eu-west-1"},
    "gcp": {"cluster_name": "t", "project_id": "my-project-123"},
    "azure": {"cluster_name": "t"},
}
# The locals each module's test root exposes as outputs.
EXPOSED = {
    "aws": ["architecture", "debian_image_name", "user_data", "ebs_optimized"],
    "gcp": ["startup_script"],
    "azure": ["custom_data", "dask_ports"],
}

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")


def _terraform(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0")
    return subprocess.run(
        ["terraform", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def host_key_pair() -> dict[str, str]:
    """A fresh ed25519 key pair in OpenSSH format, as daskfleet generates for a node."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return {"private_key": private, "public_key": public.decode() + " daskfleet-host-key\n"}


def _root(module: str, tmp_path: Path) -> Path:
    """variables.tf + locals.tf (+ templates) of a module, with its locals as outputs."""
    root = tmp_path / module
    root.mkdir()
    for f in [*(MODULES / module).glob("variables.tf"), *(MODULES / module).glob("locals.tf"),
              *(MODULES / module).glob("*.tftpl")]:  # fmt: skip
        shutil.copy(f, root / f.name)
    (root / "outputs.tf").write_text(
        "".join(
            f'output "{name}" {{\n  value     = local.{name}\n  sensitive = true\n}}\n\n'
            for name in EXPOSED[module]
        )
    )
    init = _terraform(root, "init", "-input=false", "-no-color")
    assert init.returncode == 0, init.stdout + init.stderr
    return root


def evaluate(root: Path, module: str, **values: Any) -> dict[str, Any]:
    """Apply the root with these variables; return its outputs (sensitive ones in the clear)."""
    tfvars = {**REQUIRED_VARS[module], "admin_cidr": "198.19.0.1/32", "ssh_public_key": TEST_KEY, **values}
    (root / "terraform.tfvars.json").write_text(json.dumps(tfvars))
    apply = _terraform(root, "apply", "-auto-approve", "-input=false", "-no-color")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    out = _terraform(root, "output", "-json", "-no-color")
    assert out.returncode == 0, out.stderr
    return {k: v["value"] for k, v in json.loads(out.stdout).items()}


def plan_error(root: Path, module: str, **values: Any) -> str:
    """Plan with these variables and return the error text (failing if the plan passes)."""
    tfvars = {**REQUIRED_VARS[module], "admin_cidr": "198.19.0.1/32", "ssh_public_key": TEST_KEY, **values}
    (root / "terraform.tfvars.json").write_text(json.dumps(tfvars))
    plan = _terraform(root, "plan", "-input=false", "-no-color")
    assert plan.returncode != 0, f"{module}: {values} was accepted"
    return " ".join(plan.stderr.split())  # Terraform wraps long messages


@pytest.fixture(scope="module")
def aws_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _root("aws", tmp_path_factory.mktemp("values"))


# --- AWS: the image's architecture follows the instance type ---------------------------------


@pytest.mark.parametrize(
    ("instance_type", "architecture"),
    [
        ("m6g.large", "arm64"),
        ("c7gn.xlarge", "arm64"),
        ("t4g.micro", "arm64"),
        ("r8gd.2xlarge", "arm64"),
        ("a1.medium", "arm64"),
        ("m6i.large", "x86_64"),
        ("c5.xlarge", "x86_64"),
        ("t3.medium", "x86_64"),
        ("g4dn.xlarge", "x86_64"),  # a g, but not right after the generation digit
        ("m7i-flex.large", "x86_64"),
    ],
)
def test_aws_image_architecture_follows_the_instance_type(
    aws_root: Path, instance_type: str, architecture: str
):
    (aws_root / "terraform.tfvars.json").write_text(
        json.dumps({**REQUIRED_VARS["aws"], "admin_cidr": "198.19.0.1/32", "ssh_public_key": TEST_KEY})
    )
    # Piped `terraform console` prints only the last expression's value: ask for one string.
    result = _terraform(aws_root, "console", "-var", f"instance_type={instance_type}",
                        stdin='"${local.architecture} ${local.debian_image_name}"\n')  # fmt: skip
    assert result.returncode == 0, result.stderr
    arch, image_name = json.loads(result.stdout).split()
    assert arch == architecture
    assert image_name == f"debian-12-{'arm64' if architecture == 'arm64' else 'amd64'}-*"


def test_aws_architecture_variable_overrides_the_instance_type(aws_root: Path):
    values = evaluate(aws_root, "aws", instance_type="m6g.large", architecture="x86_64")
    assert values["architecture"] == "x86_64"
    assert values["debian_image_name"] == "debian-12-amd64-*"


# --- host keys: cloud-init user data (AWS, Azure) -------------------------------------------


@pytest.mark.parametrize(("module", "local"), [("aws", "user_data"), ("azure", "custom_data")])
def test_cloud_init_installs_only_the_given_host_key(module: str, local: str, tmp_path: Path):
    key = host_key_pair()
    values = evaluate(_root(module, tmp_path), module, worker_count=2, host_keys={"scheduler": key})
    by_node = values[local]
    assert set(by_node) == {"scheduler", "worker-1", "worker-2"}
    assert by_node["worker-1"] is None and by_node["worker-2"] is None, "a node without a key gets none"
    text = by_node["scheduler"]
    if module == "azure":
        text = base64.b64decode(text).decode()  # custom_data is base64
    assert text.startswith("#cloud-config\n")
    assert yaml.safe_load(text) == {
        "ssh_deletekeys": True,  # the image's own host keys go...
        "ssh_genkeytypes": [],  # ...and none are generated in their place
        "ssh_keys": {"ed25519_private": key["private_key"], "ed25519_public": key["public_key"].strip()},
    }


def test_no_host_keys_means_no_user_data(aws_root: Path):
    values = evaluate(aws_root, "aws", worker_count=1)
    assert values["user_data"] == {"scheduler": None, "worker-1": None}


# --- host keys: GCP startup script, run for real against a temp /etc/ssh ---------------------


def _run_script(script: str, etc_ssh: Path) -> subprocess.CompletedProcess[str]:
    local = script.replace("/etc/ssh/", f"{etc_ssh}/")
    for system_only in ["systemctl restart ssh.service", "-o root -g root "]:
        assert system_only in local, f"the startup script changed: update this test ({system_only!r})"
    local = local.replace("systemctl restart ssh.service", "echo RESTARTED ssh")
    local = local.replace("-o root -g root ", "")
    return subprocess.run(["sh", "-c", local], capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(shutil.which("cmp") is None, reason="needs cmp (diffutils)")
def test_gcp_startup_script_installs_only_the_given_host_key(tmp_path: Path):
    key = host_key_pair()
    values = evaluate(_root("gcp", tmp_path), "gcp", worker_count=1, host_keys={"scheduler": key})
    assert values["startup_script"]["worker-1"] is None, "a node without a key gets no script"
    script = values["startup_script"]["scheduler"]
    assert script.startswith("#!/bin/sh\n")
    assert key["private_key"].splitlines()[1] not in script, "the key must travel base64-encoded"

    etc_ssh = tmp_path / "etc-ssh"
    etc_ssh.mkdir()
    for name in ["ssh_host_rsa_key", "ssh_host_ecdsa_key", "ssh_host_ed25519_key"]:  # the image's
        (etc_ssh / name).write_text(f"old {name}\n")
        (etc_ssh / f"{name}.pub").write_text(f"old {name}.pub\n")
    (etc_ssh / "sshd_config").write_text("# untouched\n")

    first = _run_script(script, etc_ssh)
    assert first.returncode == 0, first.stderr
    assert "RESTARTED ssh" in first.stdout
    assert sorted(p.name for p in etc_ssh.iterdir()) == [
        "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "sshd_config",
    ]  # fmt: skip
    assert (etc_ssh / "ssh_host_ed25519_key").read_text() == key["private_key"]
    assert (etc_ssh / "ssh_host_ed25519_key.pub").read_text() == key["public_key"]
    assert stat.S_IMODE((etc_ssh / "ssh_host_ed25519_key").stat().st_mode) == 0o600
    assert stat.S_IMODE((etc_ssh / "ssh_host_ed25519_key.pub").stat().st_mode) == 0o644

    again = _run_script(script, etc_ssh)  # every boot: nothing to do, no sshd restart
    assert again.returncode == 0, again.stderr
    assert "RESTARTED" not in again.stdout
    assert (etc_ssh / "ssh_host_ed25519_key").read_text() == key["private_key"]


# --- Azure: the Dask port list the NSG rules use ----------------------------------------------


def test_azure_dask_ports_follow_the_variable(tmp_path: Path):
    ports = {"scheduler": 9786, "dashboard": 9787, "worker_from": 41000, "worker_to": 41009,
             "nanny_from": 41100, "nanny_to": 41109}  # fmt: skip
    values = evaluate(_root("azure", tmp_path), "azure", dask_ports=ports)
    # Numbers and ranges: the NSG rules take them as set(string).
    assert [str(p) for p in values["dask_ports"]] == ["9786", "9787", "41000-41009", "41100-41109"]


# --- input validation: the message names the bad input ---------------------------------------

GOOD_PORTS = {"scheduler": 8786, "dashboard": 8787, "worker_from": 40000, "worker_to": 40099,
              "nanny_from": 40100, "nanny_to": 40199}  # fmt: skip


@pytest.mark.parametrize("module", CLOUD)
def test_bad_contract_inputs_are_refused_by_name(module: str, tmp_path: Path):
    root = _root(module, tmp_path)
    key = host_key_pair()
    cases = [
        ({"dask_ports": {**GOOD_PORTS, "worker_from": 40100, "worker_to": 40000}}, "dask_ports ranges"),
        ({"dask_ports": {**GOOD_PORTS, "scheduler": 80}}, "dask_ports value"),
        ({"host_keys": {"worker1": key}}, "host_keys entry must be named after a node"),
        ({"host_keys": {"scheduler": {**key, "public_key": "ssh-rsa AAAAB3Nza x"}}}, "host_keys public_key"),
        ({"host_keys": {"scheduler": {**key, "private_key": "not a key"}}}, "host_keys private_key"),
        ({"ssh_public_key": "not a key"}, "ssh_public_key"),
    ]
    if module == "aws":
        cases += [
            ({"ami_id": "debian-12"}, "ami_id must be null or an AMI ID"),
            ({"architecture": "sparc"}, "architecture must be null"),
            ({"instance_type": "large"}, "instance_type must be an EC2 instance type"),
        ]
    for values, message in cases:
        error = plan_error(root, module, **values)
        assert message in error, f"{module}: {values}: expected {message!r} in:\n{error}"
    # And the defaults (no host keys, Dask's usual ports) pass.
    ok = evaluate(root, module, host_keys={"scheduler": key, "worker-1": key}, dask_ports=GOOD_PORTS)
    assert ok


@pytest.mark.parametrize(("instance_type", "flag"), [
    ("t2.micro", None),  # EC2 refuses ebs_optimized = true for t2
    ("m3.medium", None),
    ("t3.medium", True),
    ("m6i.large", True),
])
def test_aws_asks_for_ebs_optimization_only_where_the_type_takes_it(aws_root: Path, instance_type,
                                                                     flag):
    values = evaluate(aws_root, "aws", instance_type=instance_type)
    assert values.get("ebs_optimized") == flag
