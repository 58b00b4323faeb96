"""SSH connections kept open (the client's tunnel on cloud providers, the pooled connections of
a cluster operation): keepalives on, a dead link given up within DEAD_AFTER_S rather than TCP's
quarter of an hour, and a lost SSH connection made again for the next use."""

from __future__ import annotations

import socket

from runner.cluster import ssh, tunnel
from runner.cluster.hosts import Host


class FakeTransport:
    def __init__(self):
        self.active, self.keepalive = True, None
        self.sock = socket.socket()

    def is_active(self) -> bool:
        return self.active

    def set_keepalive(self, seconds: int) -> None:
        self.keepalive = seconds


class FakeConnection:
    made: list[FakeConnection] = []

    def __init__(self):
        self.transport = FakeTransport()
        self.closed = False
        FakeConnection.made.append(self)

    def open(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        self.transport.sock.close()


def test_a_dead_ssh_connection_is_made_again_for_the_next_tunnelled_connection(monkeypatch):
    FakeConnection.made = []
    monkeypatch.setattr(tunnel, "_new_connection", lambda host, ssh: FakeConnection())
    fwd = tunnel.Forward(Host("lab1", "198.18.0.11", "scheduler"), "198.18.0.11", 8786, ssh=None)
    try:
        first = FakeConnection.made[0]
        assert first.transport.keepalive == ssh.KEEPALIVE_S
        opt = first.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert opt == ssh.DEAD_AFTER_S * 1000
        assert fwd.transport is first.transport and fwd.reconnects == 0  # alive: kept
        first.transport.active = False  # the link was down longer than DEAD_AFTER_S
        again = fwd.transport
        assert first.closed and again is FakeConnection.made[1].transport
        assert fwd.reconnects == 1 and again.keepalive == ssh.KEEPALIVE_S
    finally:
        fwd.close()


def test_pooled_connections_notice_a_dead_peer_and_dropped_hosts_connect_afresh(monkeypatch):
    """The scale-down hang: a connection pooled before Terraform destroyed its VM was used
    afterwards and waited on the vanished peer. Pooled connections now carry the dead-peer
    timeout, and `drop` forgets the hosts that go, so their next use connects anew."""
    FakeConnection.made = []
    monkeypatch.setattr(ssh, "_new_connection", lambda host, settings: FakeConnection())
    pool = ssh.ConnectionPool()
    going, staying = Host("lab3", "198.18.0.13", "worker"), Host("lab2", "198.18.0.12", "worker")
    try:
        first = pool.get(going, None)
        kept = pool.get(staying, None)
        assert first.transport.keepalive == ssh.KEEPALIVE_S
        opt = first.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert opt == ssh.DEAD_AFTER_S * 1000
        assert pool.get(going, None) is first  # alive: reused, not reopened
        pool.drop([going])
        assert first.closed and not kept.closed
        assert pool.get(staying, None) is kept
        again = pool.get(going, None)
        assert again is not first and again is FakeConnection.made[-1]
    finally:
        pool.close()
