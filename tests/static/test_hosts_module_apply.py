"""Apply terraform/modules/hosts for real against a throwaway sshd on 127.0.0.1.

The sshd has its own host key and authorized key in a temp folder; nothing leaves loopback.
Needs root (sshd privilege separation), /usr/sbin/sshd, ssh-keygen and terraform.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_sshd import SSHD, LoopbackSshd, keygen, loopback_sshd, public_key

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "terraform" / "modules" / "hosts"
TF_TIMEOUT = 120  # seconds for any one terraform command

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="needs root to run a throwaway sshd (privilege separation)",
    ),
    pytest.mark.skipif(not SSHD.exists(), reason="needs /usr/sbin/sshd"),
    pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen"),
    pytest.mark.skipif(shutil.which("terraform") is None, reason="needs terraform on PATH"),
]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[LoopbackSshd]:
    with loopback_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    """A temp copy of the module, so .terraform/ and state never land in the checkout."""
    copy = tmp_path / "hosts"
    shutil.copytree(
        MODULE,
        copy,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", ".terraform.lock.hcl"),
    )
    return copy / "examples" / "basic"


def _terraform(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0")
    return subprocess.run(
        ["terraform", *args, "-no-color"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TF_TIMEOUT,
    )


def _write_vars(workdir: Path, sshd: LoopbackSshd, host_key: str) -> None:
    hosts = [
        {"name": "sched", "address": "127.0.0.1", "role": "scheduler", "user": "root",
         "port": sshd.port, "host_key": host_key},
        {"name": "w1", "address": "127.0.0.1", "role": "worker", "user": "root",
         "port": sshd.port, "host_key": host_key},
    ]  # fmt: skip
    (workdir / "terraform.tfvars.json").write_text(
        json.dumps(
            {
                "hosts": hosts,
                "ssh_private_key_path": str(sshd.client_key),
                "connect_timeout": "5s",
            }
        )
    )


def test_apply_checks_hosts_and_outputs_shared_shape(sshd: LoopbackSshd, example_dir: Path):
    _write_vars(example_dir, sshd, sshd.host_key)
    init = _terraform(example_dir, "init", "-input=false")
    assert init.returncode == 0, init.stdout + init.stderr

    apply = _terraform(example_dir, "apply", "-auto-approve", "-input=false")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    # The remote check really ran on the machine and reported what it found.
    assert "daskfleet: sched arch=" in apply.stdout
    assert "daskfleet: w1 arch=" in apply.stdout
    assert "Python 3." in apply.stdout

    out = _terraform(example_dir, "output", "-json", "hosts")
    assert out.returncode == 0, out.stderr
    # The shared shape: an existing machine is dialled at its given address, and has no
    # separate public one.
    assert json.loads(out.stdout) == [
        {"name": "sched", "role": "scheduler", "user": "root", "port": sshd.port,
         "private_address": "127.0.0.1", "public_address": None},
        {"name": "w1", "role": "worker", "user": "root", "port": sshd.port,
         "private_address": "127.0.0.1", "public_address": None},
    ]  # fmt: skip


def test_apply_fails_when_host_key_does_not_match(sshd: LoopbackSshd, example_dir: Path):
    keygen(sshd.workdir / "impostor_key")
    _write_vars(example_dir, sshd, public_key(sshd.workdir / "impostor_key"))
    init = _terraform(example_dir, "init", "-input=false")
    assert init.returncode == 0, init.stdout + init.stderr

    apply = _terraform(example_dir, "apply", "-auto-approve", "-input=false")
    assert apply.returncode != 0, "apply must fail when the host key does not match"
    assert "key mismatch" in apply.stderr, apply.stderr
    assert "daskfleet: sched arch=" not in apply.stdout

    out = _terraform(example_dir, "output", "-json", "hosts")
    assert out.returncode != 0, f"no hosts output may be recorded, got {out.stdout!r}"


def test_plan_refuses_bad_hosts_list(example_dir: Path, tmp_path: Path):
    """Input checking needs no SSH: two schedulers and a bad port are named in the message."""
    key = tmp_path / "unused_key"
    key.write_text("not a key\n")
    bad = [
        {"name": "a", "address": "10.0.0.1", "role": "scheduler", "user": "root", "port": 22,
         "host_key": "ssh-ed25519 AAAA"},
        {"name": "b", "address": "10.0.0.2", "role": "scheduler", "user": "root", "port": 70000,
         "host_key": "ssh-ed25519 AAAA"},
    ]  # fmt: skip
    (example_dir / "terraform.tfvars.json").write_text(
        json.dumps({"hosts": bad, "ssh_private_key_path": str(key)})
    )
    assert _terraform(example_dir, "init", "-input=false").returncode == 0
    plan = _terraform(example_dir, "plan", "-input=false")
    assert plan.returncode != 0
    assert 'Exactly one host must have role "scheduler".' in plan.stderr
    assert "port must be a whole number from 1 to 65535" in plan.stderr
