"""The join (runner/ephemeral/join.py) on this machine's loopback: the user-data command that
starts the agent, run by `sh` as cloud-init runs it; the agent's key printed on its "console";
the files handed over only by the holder of the run's join key, and only to the key the console
named. The same path on emulated instances: tests/e2e/test_6_aws_ephemeral.py."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest

from runner.ephemeral import join
from runner.errors import ProvisionError

pytest.importorskip("moto")
import test_ephemeral_gc  # noqa: E402

ec2 = test_ephemeral_gc.ec2  # the fixture: moto's in-process EC2

FILES = {"ca.pem": "-----BEGIN CERTIFICATE-----\nca\n", "cert.pem": "-----BEGIN CERTIFICATE-----\n",
         "key.pem": "-----BEGIN PRIVATE KEY-----\nsecret\n"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def agent(tmp_path):
    """The agent, started by the user-data command with its folder under tmp_path; yields
    (folder, port, console file, the run's identity)."""
    identity = join.JoinIdentity.make(tmp_path / "control", 3600)
    folder = tmp_path / "run" / "daskfleet" / "tls"
    console = tmp_path / "console"
    port = _free_port()
    subprocess.run(["sh", "-c", join.agent_command(identity.cert_pem, port, str(folder),
                                                   str(console))], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while join.fingerprint(console.read_text() if console.exists() else "") is None:
        assert time.monotonic() < deadline, (folder.parent / "join-agent.log").read_text()
        time.sleep(0.1)
    yield folder, port, console, identity
    subprocess.run(["pkill", "-f", f"join-agent.py {folder} "], check=False)


def test_the_agent_takes_the_files_from_the_join_key_only_after_its_console_was_checked(
        agent, tmp_path):
    folder, port, console, identity = agent
    pinned = join.fingerprint(console.read_text())
    assert pinned is not None and pinned.startswith("sha256=")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # another key (not the run's): the agent refuses the handshake, nothing is written
    stranger = join.JoinIdentity.make(tmp_path / "stranger", 3600)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        join.deliver("127.0.0.1", port, pinned, stranger, FILES, timeout=10)
    # the run's key, but a console that named another certificate: this side sends nothing
    with pytest.raises(ProvisionError, match="other than the one the instance printed"):
        join.deliver("127.0.0.1", port, "sha256=" + "0" * 64, identity, FILES, timeout=10)
    assert not (folder / "ready").exists() and not (folder / "key.pem").exists()
    # the run's key and the console's certificate: handed over, root-only, and the agent ends
    said = []
    took = join.join("i-1", "127.0.0.1", console.read_text, identity, FILES, timeout=30,
                     say=said.append, port=port, poll_s=0.1)
    assert took < 30
    for name, text in FILES.items():
        assert (folder / name).read_text() == text
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    # the folder the container mounts holds those files alone (the agent's own key is beside it)
    assert sorted(p.name for p in folder.iterdir()) == ["ca.pem", "cert.pem", "key.pem", "ready"]
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", f"join-agent.py {folder} "]).returncode == 0:
        assert time.monotonic() < deadline, "the agent did not exit after the hand-over"
        time.sleep(0.1)


def test_a_console_without_the_key_fails_naming_the_instance_and_the_console():
    with pytest.raises(ProvisionError, match=r"i-0abc printed no join key on its console"):
        join.join("i-0abc", "127.0.0.1", lambda: "Booting...\n", None, FILES, timeout=0.3,
                  say=print, poll_s=0.1)


def test_an_agent_that_failed_says_why_on_the_console():
    text = "boot\ndaskfleet-join error: FileNotFoundError: openssl\n"
    with pytest.raises(ProvisionError, match="join agent failed: FileNotFoundError: openssl"):
        join.fingerprint(text)
    # the last word counts: a reboot's new agent printed its key after an old failure
    assert join.fingerprint(text + "daskfleet-join sha256=" + "a" * 64 + "\n") == \
        "sha256=" + "a" * 64


def test_an_agent_nobody_reaches_fails_after_the_grace_naming_the_port_and_admin_cidr(tmp_path):
    """The console has spoken (so the agent listens): an unreachable port fails after the
    grace, not after the whole timeout (a wrong admin_cidr is told in seconds)."""
    identity = join.JoinIdentity.make(tmp_path, 3600)
    console = "daskfleet-join sha256=" + "b" * 64 + "\n"
    t = time.monotonic()
    with pytest.raises(ProvisionError, match=r"could not reach 127.0.0.1:\d+ for 1s .*only "
                                             r"ephemeral.admin_cidr reach tcp"):
        join.join("i-2", "127.0.0.1", lambda: console, identity, FILES, timeout=600, say=print,
                  port=_free_port(), poll_s=0.1, reach_grace_s=1.0)
    assert time.monotonic() - t < 30


def test_the_user_data_command_carries_no_key(tmp_path):
    identity = join.JoinIdentity.make(tmp_path, 3600)
    command = join.agent_command(identity.cert_pem)
    assert "PRIVATE KEY" not in command and identity.cert_pem in command
    assert "PRIVATE KEY" in identity.key_path.read_text()
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600
    assert len(command) < 4000  # user data is limited to 16 KB
    assert Path(join.NODE_TLS_DIR).parent == Path("/run/daskfleet")  # tmpfs: never on a disk


def test_the_runs_group_opens_the_join_port_to_admin_cidr_only(ec2):
    from runner.ephemeral import aws
    from runner.ephemeral import tags as T

    made = aws.Made()
    tags = T.run_tags("c1", "r1", T.parse("2026-01-02T03:04:05Z"), 3600)
    aws.make_network(ec2, "10.1.0.0/24", "10.1.0.0/24", tags, made, "us-east-1a")
    aws.make_group(ec2, made.vpc_id, "df-r1", "203.0.113.7/32", (8786, 8787), tags, made)
    [group] = ec2.describe_security_groups(GroupIds=[made.group_id])["SecurityGroups"]
    rules = {(p["FromPort"], p["ToPort"]): p for p in group["IpPermissions"]}
    join_rule = rules[(join.JOIN_PORT, join.JOIN_PORT)]
    assert [r["CidrIp"] for r in join_rule["IpRanges"]] == ["203.0.113.7/32"]
    assert not join_rule.get("UserIdGroupPairs")


class _Console:
    """An EC2 client's GetConsoleOutput that raises the codes queued for it first."""

    def __init__(self, *codes: str):
        self.codes, self.calls = list(codes), []

    def get_console_output(self, **kwargs):
        from botocore.exceptions import ClientError

        self.calls.append(kwargs)
        if self.codes:
            raise ClientError({"Error": {"Code": self.codes.pop(0), "Message": "no"}},
                              "GetConsoleOutput")
        return {"InstanceId": kwargs["InstanceId"], "Output": "daskfleet-join sha256=..."}


def test_the_console_is_read_latest_first_then_as_older_types_allow(monkeypatch):
    from runner.ephemeral import aws

    monkeypatch.setattr(aws.time, "sleep", lambda s: None)
    throttled = _Console("RequestLimitExceeded")  # retried, still asking for the latest
    assert aws.console_output(throttled, "i-1").startswith("daskfleet-join")
    assert [c.get("Latest") for c in throttled.calls] == [True, True]
    xen = _Console("UnsupportedOperation")  # not a Nitro type: the plain output
    assert aws.console_output(xen, "i-2").startswith("daskfleet-join")
    assert [c.get("Latest") for c in xen.calls] == [True, None]
    with pytest.raises(ProvisionError, match="reading i-3's console .GetConsoleOutput."):
        aws.console_output(_Console("UnauthorizedOperation"), "i-3")
