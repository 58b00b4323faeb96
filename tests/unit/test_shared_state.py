"""Shared state (`state: {url: s3://...}`) against moto's in-process S3 (no server, no network):
the lock two operators' commands take, the CA sealed with the team's passphrase, a copy made on
a second machine, and errors that name the key to fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from pydantic import ValidationError

from runner import shared_state
from runner.config import ClusterSpec
from runner.errors import ConfigError, DaskfleetError
from runner.provision.tls import CertificateAuthority
from runner.shared_state import SharedState

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

URL = "s3://team-state/daskfleet"


@pytest.fixture
def s3(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1",
                 "DASKFLEET_STATE_PASSPHRASE": "correct horse"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr(shared_state, "POLL_S", 0.05)
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="team-state")
        yield client


def store(source="clusters/team.yaml") -> SharedState:
    return SharedState(URL, "team", {"region": "us-east-1"}, source=source)


def test_a_second_command_waits_for_the_lock_and_says_who_holds_it(s3):
    said: list[str] = []
    first, second = store(), store()
    with first.locked("daskfleet up"):
        holder = json.loads(s3.get_object(Bucket="team-state",
                                          Key="daskfleet/team/lock")["Body"].read())
        assert holder["pid"] == os.getpid() and holder["command"].startswith("daskfleet up")
        got = threading.Event()

        def take() -> None:
            with second.locked("daskfleet scale", progress=said.append):
                got.set()

        t = threading.Thread(target=take)
        t.start()
        deadline = time.monotonic() + 30
        while not said and time.monotonic() < deadline:  # until the second has tried and waits
            time.sleep(0.05)
        assert any("holds the cluster's lock" in s and "daskfleet up" in s for s in said), said
        time.sleep(0.3)  # a few more of its tries, all refused while the first holds it
        assert not got.is_set()
    t.join(10)
    assert got.is_set()  # released at the first's end, then taken
    # and released again: nothing left in the store
    assert "Contents" not in s3.list_objects_v2(Bucket="team-state", Prefix="daskfleet/team/lock")


def test_a_lock_held_elsewhere_times_out_naming_the_holder_and_unlock(s3):
    s3.put_object(Bucket="team-state", Key="daskfleet/team/lock", Body=json.dumps(
        {"host": "alice-laptop", "pid": 4242, "user": "alice", "command": "daskfleet up (-c x)",
         "since": "2026-12-01T10:00:00+00:00"}).encode())
    with pytest.raises(DaskfleetError) as e:
        with store().locked("daskfleet down", wait=0.3):
            pass
    text = str(e.value)
    assert "alice@alice-laptop" in text and "since 2026-12-01" in text
    assert "daskfleet unlock -c clusters/team.yaml" in text
    assert store().unlock()["host"] == "alice-laptop"
    with store().locked("daskfleet down", wait=0.3):
        pass


def test_a_lock_left_by_a_dead_process_of_this_machine_is_taken_over(s3):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    s3.put_object(Bucket="team-state", Key="daskfleet/team/lock", Body=json.dumps(
        {"host": socket.gethostname(), "pid": int(dead), "user": "me",
         "command": "daskfleet up"}).encode())
    said: list[str] = []
    with store().locked("daskfleet up", wait=1, progress=said.append):
        pass
    assert any("that process is gone" in s for s in said), said


def test_the_ca_is_sealed_in_the_store_and_a_second_machine_gets_the_same(s3, tmp_path):
    a, b = tmp_path / "a" / "team", tmp_path / "b" / "team"
    ca = CertificateAuthority(a / "tls", "team")
    ca.ensure({"lab1": "198.18.0.11"})
    (a / "state.json").write_text(json.dumps({"scheduler": "tls://198.18.0.11:8786"}))
    store().push(a)
    sealed = s3.get_object(Bucket="team-state", Key="daskfleet/team/secrets.enc")["Body"].read()
    assert ca.ca_key.read_bytes() not in sealed and b"PRIVATE KEY" not in sealed
    assert store().pull(b) is True
    for f in (a / "tls").rglob("*"):
        if f.is_file():
            twin = b / "tls" / f.relative_to(a / "tls")
            assert twin.read_bytes() == f.read_bytes(), f
            assert twin.stat().st_mode & 0o777 == f.stat().st_mode & 0o777, f
    assert json.loads((b / "state.json").read_text())["scheduler"] == "tls://198.18.0.11:8786"


def test_a_wrong_or_missing_passphrase_is_refused_by_name(s3, tmp_path, monkeypatch):
    a = tmp_path / "a" / "team"
    CertificateAuthority(a / "tls", "team").ensure({})
    store().push(a)
    monkeypatch.setenv("DASKFLEET_STATE_PASSPHRASE", "wrong")
    with pytest.raises(ConfigError, match=r"\$DASKFLEET_STATE_PASSPHRASE is not the passphrase"):
        store().pull(tmp_path / "b" / "team")
    monkeypatch.delenv("DASKFLEET_STATE_PASSPHRASE")
    with pytest.raises(ConfigError, match=r"DASKFLEET_STATE_PASSPHRASE, which is not set"):
        store().pull(tmp_path / "c" / "team")


def test_a_machine_s_own_ca_is_kept_aside_the_first_time_not_silently_replaced(s3, tmp_path):
    shared, mine = tmp_path / "shared" / "team", tmp_path / "mine" / "team"
    CertificateAuthority(shared / "tls", "team").ensure({})
    store().push(shared)
    own = CertificateAuthority(mine / "tls", "team")
    own.ensure({})
    own_ca = own.ca_cert.read_bytes()
    said: list[str] = []
    store().pull(mine, said.append)
    assert (mine / "tls.before-shared" / "ca.pem").read_bytes() == own_ca
    assert (mine / "tls" / "ca.pem").read_bytes() == (shared / "tls" / "ca.pem").read_bytes()
    assert any("tls.before-shared" in s for s in said), said


def test_a_missing_bucket_names_state_url(s3):
    bad = SharedState("s3://no-such-bucket/x", "team", {"region": "us-east-1"},
                      source="clusters/team.yaml")
    with pytest.raises(DaskfleetError, match=r"clusters/team.yaml: state.url s3://no-such-bucket"
                       r"/x: .*bucket 'no-such-bucket' does not exist"):
        bad.pull(__import__("pathlib").Path("/nonexistent-never-written"))


def test_terraform_s_backend_for_an_s3_compatible_store_never_asks_aws_or_the_metadata():
    b = SharedState(URL, "team", {"endpoint_url": "http://198.18.0.5:9000",
                                  "region": "eu-west-1"}).terraform_backend()
    assert b["bucket"] == "team-state" and b["key"] == "daskfleet/team/terraform.tfstate"
    assert b["use_lockfile"] is True and b["encrypt"] is True and b["region"] == "eu-west-1"
    assert b["endpoints"] == {"s3": "http://198.18.0.5:9000"} and b["use_path_style"]
    assert b["skip_metadata_api_check"] and b["skip_credentials_validation"]
    aws = SharedState(URL, "team", {}).terraform_backend()
    assert "endpoints" not in aws and "skip_metadata_api_check" not in aws  # real AWS: its chain


@pytest.mark.parametrize("state, message", [
    ({"url": "https://bucket/x"}, "is not an s3://bucket/prefix URL"),
    ({"url": "s3://b/x", "storage_options": {"endpoint": "http://x"}}, "unknown key(s) endpoint"),
    ({"url": "s3://b/x", "passphrase_env": "not a name"}, "passphrase_env"),
])
def test_a_bad_state_block_is_refused_by_key(state, message):
    with pytest.raises(ValidationError) as e:
        ClusterSpec(name="team", provider="lab", state=state)
    assert message in str(e.value)


def test_an_ephemeral_cluster_has_no_state_to_share():
    with pytest.raises(ValidationError, match="state: is not used by mode: ephemeral"):
        ClusterSpec(name="eph", provider="aws", mode="ephemeral", state={"url": URL},
                    ephemeral={"region": "eu-west-1", "admin_cidr": "203.0.113.7/32",
                               "network": {"vpc_cidr": "10.0.0.0/16",
                                           "subnet_cidr": "10.0.1.0/24"},
                               "image": {"id": "ami-0123456789abcdef0"}})


def test_shared_state_needs_a_terraform_with_the_s3_lock_file(tmp_path, monkeypatch):
    import json as _json

    from runner.errors import ProvisionError
    from runner.provision import terraform

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tf = bin_dir / "terraform"
    tf.write_text(f"#!/bin/sh\necho '{_json.dumps({'terraform_version': '1.9.8'})}'\n")
    tf.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    backend = SharedState(URL, "team", {}).terraform_backend()
    with pytest.raises(ProvisionError, match=r"1.9.8 is too old for state: .*>= 1.10"):
        terraform.write_root(tmp_path / "tf", "hosts", {"cluster_name": "x"}, backend=backend)
    terraform.write_root(tmp_path / "tf", "hosts", {"cluster_name": "x"})  # 1.9 does without
    root = _json.loads((tmp_path / "tf" / "main.tf.json").read_text())
    assert "terraform" not in root
