"""Bad cluster files, through `daskfleet plan -c FILE` as a user runs it: exit status 2, one
message naming the file, the key or host, and what to do, and nothing on disk changed (the
cluster's state.json and inventory of an earlier `up` are untouched, nothing new is written)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from badinput import assert_clear_error, run_cli, snapshot

from runner.config import load_cluster

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
PRIVATE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
               "-----END OPENSSH PRIVATE KEY-----\n")


def lab(**over) -> dict:
    return {"name": "bad", "provider": "lab", **over}


def hosts(*rows: dict, ssh: dict | None = None, **over) -> dict:
    """A provider-hosts cluster on loopback addresses (nothing else is ever dialled)."""
    rows = rows or ({"name": "sched", "address": "127.0.0.2", "role": "scheduler"},
                    {"name": "w1", "address": "127.0.0.3", "role": "worker"})
    return {"name": "bad", "provider": "hosts",
            "ssh": {"private_key": "../keys/id_test", "known_hosts": "../keys/known_hosts",
                    **(ssh or {})},
            "hosts": list(rows), **over}


def host(name: str, address: str = "127.0.0.3", role: str = "worker", **over) -> dict:
    return {"name": name, "address": address, "role": role, **over}


def key_is_a_folder(keys: Path) -> dict:
    (keys / "a-folder").mkdir()
    return hosts(ssh={"private_key": "../keys/a-folder"})


@dataclass(frozen=True)
class Case:
    id: str
    data: dict | Callable[[Path], dict]  # the file's content, or a function of the keys folder
    names: tuple[str, ...]  # what the message names (besides the file)
    todo: str  # and what it tells the user to do


CASES = [
    Case("unknown key", lab(dask={"threads_per_workr": 2}),
         ("dask.threads_per_workr: unknown key",), "allowed: scheduler_port, dashboard_port"),
    Case("unknown top-level key", lab(workers=3), ("workers: unknown key",), "allowed: name, provider, mode"),
    Case("wrong type", lab(dask={"threads_per_worker": "two"}),
         ("dask.threads_per_worker", "'two'"), "should be a valid integer"),
    Case("wrong type of a section", lab(ssh="root@host"), ("ssh:", "root@host"),
         "should be a valid dictionary"),
    Case("missing provider", {"name": "bad"}, ("provider: required key is missing",),
         "one of: lab, hosts, aws, gcp, azure"),
    Case("unknown provider", lab(provider="digitalocean"), ("provider:", "digitalocean"),
         "'lab', 'hosts', 'aws', 'gcp' or 'azure'"),
    Case("two schedulers", hosts(host("a", "127.0.0.2", "scheduler"),
                                 host("b", "127.0.0.3", "scheduler"), host("w1")),
         ("hosts: 2 hosts have role: scheduler (a, b)",), "make the others role: worker"),
    Case("duplicate host names", hosts(host("a", "127.0.0.2", "scheduler"), host("w1"),
                                       host("w1", "127.0.0.4")),
         ("hosts:", "repeated: w1"), "rename all but one"),
    Case("host name with an underscore", hosts(host("s", "127.0.0.2", "scheduler"),
                                               host("worker_1")),
         ("hosts.1.name", "'worker_1' is not a valid host name"), "lowercase letters, digits"),
    Case("host name with capitals", hosts(host("Sched", "127.0.0.2", "scheduler"), host("w1")),
         ("hosts.0.name", "'Sched'"), "lowercase letters"),
    Case("host name ending in a dash", hosts(host("s", "127.0.0.2", "scheduler"), host("w1-")),
         ("hosts.1.name", "'w1-'"), "not starting or ending with '-'"),
    Case("host name of 64 characters", hosts(host("s", "127.0.0.2", "scheduler"),
                                             host("w" * 64)),
         ("hosts.1.name",), "1 to 63"),
    Case("host name with dots", hosts(host("s", "127.0.0.2", "scheduler"),
                                      host("w1.example.com")),
         ("hosts.1.name", "'w1.example.com'"), "e.g. worker-1"),
    Case("host address that is no hostname", hosts(host("s", "127.0.0.2", "scheduler"),
                                                   host("w1", "my host!")),
         ("hosts.1.address", "'my host!'"), "e.g. 10.0.0.11 or node1.example.com"),
    Case("ssh port out of range", hosts(host("s", "127.0.0.2", "scheduler"),
                                        host("w1", port=70000)),
         ("hosts.1.port", "70000"), "less than or equal to 65535"),
    Case("scheduler port below 1024", lab(dask={"scheduler_port": 80}),
         ("dask.scheduler_port", "(got 80)"), "greater than or equal to 1024"),
    Case("worker port range out of range", lab(dask={"worker_port_range": "40000:70000"}),
         ("dask.worker_port_range", "40000:70000"), "within 1024:65535"),
    Case("port range upside down", lab(dask={"nanny_port_range": "40199:40100"}),
         ("dask.nanny_port_range",), "low <= high"),
    Case("scheduler and dashboard on one port", lab(dask={"dashboard_port": 8786}),
         ("dask.scheduler_port and dask.dashboard_port collide", "8786"),
         "give every Dask process kind its own ports"),
    Case("worker and nanny ranges overlap", lab(dask={"nanny_port_range": "40050:40150"}),
         ("dask.worker_port_range and dask.nanny_port_range collide", "40050"),
         "its own ports"),
    Case("scheduler port inside the worker range", lab(dask={"scheduler_port": 40010}),
         ("dask.scheduler_port and dask.worker_port_range collide",), "its own ports"),
    Case("no worker host", hosts(host("s", "127.0.0.2", "scheduler")),
         ("0 worker(s)",), "add the missing host(s)"),
    Case("a lab without a worker", lab(lab={"hosts": 1}), ("lab.hosts", "(got 1)"),
         "2 or more give at least one worker"),
    Case("min_workers 0", lab(min_workers=0), ("min_workers", "(got 0)"),
         "leave it out to need them all"),
    Case("private key file missing", hosts(ssh={"private_key": "../keys/nope"}),
         ("ssh.private_key: file not found", "nope"), "fix the path"),
    Case("private key is a folder", key_is_a_folder, ("ssh.private_key", "a-folder"),
         "Point ssh.private_key at a file this user can read"),
    Case("private key is the public key", hosts(ssh={"private_key": "../keys/id_test.pub"}),
         ("ssh.private_key", "id_test.pub is a public key"), "the same name without .pub"),
    Case("known_hosts without the host", hosts(host("sched", "127.0.0.2", "scheduler"),
                                               host("w9", "127.0.0.9")),
         ("ssh.known_hosts", "no host key for w9 (127.0.0.9)"), "ssh-keyscan -p 22 127.0.0.9"),
    Case("known_hosts without the host's port", hosts(host("sched", "127.0.0.2", "scheduler"),
                                                      host("w1", port=2222)),
         ("ssh.known_hosts", "w1 ([127.0.0.3]:2222)"), "ssh-keyscan -p 2222 127.0.0.3"),
]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder whose cluster `bad` was brought up before: state and inventory exist."""
    for var in ("DASKFLEET_STATE_DIR", "DASKFLEET_INVENTORY_DIR"):
        monkeypatch.delenv(var, raising=False)
    proj = tmp_path / "proj"
    for folder in ("clusters", "keys", ".daskfleet/bad", "inventory/bad"):
        (proj / folder).mkdir(parents=True)
    (proj / ".daskfleet/bad/state.json").write_text('{"hosts": [], "lock_hash": "abc"}\n')
    (proj / "inventory/bad/hosts.yml").write_text("all: {}\n")
    (proj / "keys/id_test").write_text(PRIVATE_KEY)
    (proj / "keys/id_test").chmod(0o600)
    (proj / "keys/id_test.pub").write_text(HOST_KEY + " me@here\n")
    (proj / "keys/known_hosts").write_text(f"127.0.0.2 {HOST_KEY}\n127.0.0.3 {HOST_KEY}\n")
    # a file that passes validation must not reach Terraform or SSH from this suite
    monkeypatch.setattr("runner.provision.plan.plan", _must_not_run)
    return proj


def _must_not_run(*args, **kwargs):
    raise AssertionError("the cluster file was accepted")


def test_the_files_the_cases_start_from_are_valid(project):
    for data in (lab(), hosts()):
        path = project / "clusters" / "good.yaml"
        path.write_text(yaml.safe_dump(data))
        load_cluster(path)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_cluster_file_is_refused_naming_it_and_changes_nothing(case, project, capsys):
    data = case.data(project / "keys") if callable(case.data) else case.data
    path = project / "clusters" / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    before = snapshot(project)
    outcome = run_cli(["plan", "-c", str(path)], capsys)
    assert_clear_error(outcome, 2, (str(path), *case.names), case.todo)
    assert snapshot(project) == before
