"""One lab cluster for all e2e tests of a session: lab up 3 hosts (the uplink shaped), daskfleet
up (measured: what it sent into the lab), torn down at the end."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from aptlists import write_apt_lists

from runner.lab import Lab
from runner.lab.uplink import bridge_tx_bytes
from runner.provision.lock import derive_lock
from runner.provision.wheelhouse import build

REPO = Path(__file__).resolve().parents[2]
LAB_CLUSTER = REPO / "clusters" / "lab.yaml"
UPLINK = "200mbit"  # the session lab's uplink (lab up --uplink): a laptop's, on a good day


def lab_skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, mounts); CI runs these as root"
    missing = [t for t in ("ip", "unshare", "ssh-keygen", "terraform") if not shutil.which(t)]
    if not os.access("/usr/sbin/sshd", os.X_OK):
        missing.append("sshd")
    return f"the lab needs {', '.join(missing)}" if missing else None


@dataclass
class CLI:
    workdir: Path
    env: dict

    def __call__(self, *args: str, timeout: float = 600, check: bool = True):
        try:
            proc = subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=self.workdir,
                                  env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:  # say where the command was when it was stopped
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
            pytest.fail(f"`daskfleet {' '.join(args)}` still ran after {timeout:.0f} s\n"
                        f"stdout:\n{out or ''}\nstderr:\n{err or ''}")
        if check and proc.returncode != 0:
            pytest.fail(f"`daskfleet {' '.join(args)}` exited {proc.returncode}\n"
                        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("daskfleet-e2e")


@pytest.fixture(scope="session")
def cli(workdir: Path) -> CLI:
    # debian-packages jobs read fixed lists (the machine's change with every apt-get update)
    lists = write_apt_lists(workdir / "apt-lists")
    env = {**os.environ, "DASKFLEET_STATE_DIR": str(workdir / ".daskfleet"),
           "DASKFLEET_INVENTORY_DIR": str(workdir / "inventory"), "PYTHONUNBUFFERED": "1",
           "DASKFLEET_APT_LISTS": str(lists)}
    return CLI(workdir, env)


@pytest.fixture(scope="session")
def session_lab(cli: CLI, workdir: Path):
    """A running 3-host lab with the cluster of clusters/lab.yaml up on it, for the session."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab()
    if lab.record.exists():  # plain hosts, or the emulated cloud alone (`--hosts 0`)
        from runner.lab.ec2 import cloud_alive

        cloud = lab.cloud()
        if any(lab.host_alive(h) for h in lab.hosts()) or (cloud and cloud_alive(cloud)):
            pytest.fail("a lab is already up on this machine (someone's `daskfleet lab up`); "
                        "run `daskfleet lab down` first: the e2e tests need their own lab")
        lab.down(progress=lambda *_: None)  # a dead lab left by a killed session: clear it
    old = {k: os.environ.get(k) for k in ("DASKFLEET_STATE_DIR", "DASKFLEET_INVENTORY_DIR")}
    os.environ.update({k: cli.env[k] for k in old})
    try:
        # the uplink shaped as a laptop's, so the cold `up` below is also test_12's measure of
        # what bring-up sends into the lab (one cold `up` for the session, not two)
        cli("lab", "up", "--hosts", "3", "--uplink", UPLINK, timeout=120)
        wheelhouse = build(derive_lock(platform.machine()), progress=lambda *_: None)
        sent_before = bridge_tx_bytes()
        up = cli("up", "-c", str(LAB_CLUSTER), timeout=900)
        ansible_log = Path(cli.env["DASKFLEET_STATE_DIR"]) / "lab" / "logs" / "ansible.log"
        yield {"up_output": up.stdout + up.stderr,
               "cold_up": {"sent": bridge_tx_bytes() - sent_before,
                           "wheelhouse": wheelhouse.archive.stat().st_size,
                           "ansible_log": ansible_log.read_text()}}
    finally:
        cli("down", "-c", str(LAB_CLUSTER), check=False, timeout=120)
        cli("lab", "down", check=False, timeout=120)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def lab_cluster(session_lab, cli: CLI):
    """The session's lab cluster, made again if an earlier module took the lab down (the
    teardown tests do, at their end): no module depends on the order the modules run in.
    Module-scoped, so the modules' own fixtures (the fault baseline, the emulated EC2 cluster)
    can stand on it."""
    lab = Lab()
    if not lab.hosts():
        cli("lab", "up", "--hosts", "3", timeout=120)
        up = cli("up", "-c", str(LAB_CLUSTER), timeout=900)
        session_lab["up_output"] = up.stdout + up.stderr
    return session_lab


@pytest.fixture
def no_lab(session_lab, cli: CLI):
    """No lab running, for tests that make labs of their own (the session's is made again by
    `lab_cluster` for the tests after them)."""
    cli("lab", "down", timeout=120)
