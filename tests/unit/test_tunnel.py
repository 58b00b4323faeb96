"""The client's SSH tunnel to the scheduler (runner.cluster.tunnel.Forward, the cloud providers'
only route to Dask), run for real through a throwaway sshd on 127.0.0.1 (tests/loopback_sshd.py)
to a local echo server: what goes in comes back; a port that refuses is a closed connection and a
failed probe, not an error; and an SSH connection that died (its sshd process killed, as a host
reboot or a link lost for good ends it) is made again for the next connection."""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from loopback_sshd import loopback_sshd

from runner.cluster.hosts import Host
from runner.cluster.ssh import SSHSettings
from runner.cluster.tunnel import Forward


@pytest.fixture
def server(tmp_path):
    with loopback_sshd(tmp_path / "sshd") as s:
        yield s


@pytest.fixture
def echo_port():
    """A TCP echo server on 127.0.0.1 (the scheduler's port, as seen from its host)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def forward_to(server, port: int) -> Forward:
    """A tunnel through ``server`` (logged in as this user) to 127.0.0.1:``port`` there."""
    host = Host("sched", "127.0.0.1", "scheduler", user=getpass.getuser(), port=server.port)
    return Forward(host, "127.0.0.1", port,
                   SSHSettings(private_key=server.client_key, known_hosts=server.known_hosts()))


@pytest.fixture
def forward(server, echo_port):
    fwd = forward_to(server, echo_port)
    yield fwd
    fwd.close()


def round_trip(local_port: int, payload: bytes) -> bytes:
    """What comes back for ``payload``; b"" when the tunnel closed the connection (closed or
    reset: data the far side never read makes the close a reset)."""
    got = b""
    with socket.create_connection(("127.0.0.1", local_port), timeout=10) as s:
        s.settimeout(10)
        try:
            s.sendall(payload)
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            return b""
    return got


def test_what_goes_into_the_tunnel_comes_back_from_the_far_side(forward):
    payload = os.urandom(1 << 20)
    assert round_trip(forward.local_port, payload) == payload
    assert round_trip(forward.local_port, b"again") == b"again"  # one SSH connection, reused
    assert forward.reconnects == 0 and forward.probe()


def test_a_port_that_refuses_is_a_closed_connection_and_a_failed_probe(server, forward):
    refused = forward_to(server, _closed_port())
    try:
        assert not refused.probe()
        assert round_trip(refused.local_port, b"hello") == b""  # closed, as a refused port is
    finally:
        refused.close()
    assert round_trip(forward.local_port, b"still here") == b"still here"


def test_a_dead_ssh_connection_is_made_again_for_the_next_connection(server, forward):
    assert round_trip(forward.local_port, b"before") == b"before"
    # the sshd processes serving the tunnel's connection (the listening sshd's descendants)
    served = _descendants(server.pid)
    assert served, "no sshd process serves the tunnel"
    for pid in served:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # the client's next connection (Dask's reconnect) goes through a new SSH connection, once
    # the old one is seen dead; a connection tried before that is closed, as a lost link's
    deadline = time.monotonic() + 30
    while round_trip(forward.local_port, b"after") != b"after":
        assert time.monotonic() < deadline, "the tunnel did not come back"
        time.sleep(0.2)
    assert forward.reconnects == 1


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True,
                              text=True).stdout.split()
        found += [int(k) for k in kids]
        todo += kids
    return found


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free again once closed: nothing listens there
