"""SSH to the cluster's hosts with Fabric: verified host keys, key auth only, parallel fan-out."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import paramiko
from fabric import Config, Connection

from runner.cluster.hosts import Host
from runner.errors import DaskfleetError, HostError

logger = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")


# sshd refuses the 11th session on one connection (Debian's MaxSessions 10); stay well below it,
# since sshd frees a session only once its command's process has exited too.
MAX_CHANNELS_PER_HOST = 6
SESSION_RETRIES = 6
# SSH keepalives every KEEPALIVE_S, and a connection whose packets go unacknowledged for
# DEAD_AFTER_S is given up (TCP_USER_TIMEOUT): a NAT or firewall never drops an idle connection, a
# blip shorter than that is ridden out, and a dead peer (a VM Terraform destroyed, a host cut
# off) is noticed in a minute, not after TCP's 15 (a channel opened on it would wait an hour).
KEEPALIVE_S = 15
DEAD_AFTER_S = 45


def keep_alive(conn: Connection) -> None:
    """Keepalives and a dead-peer timeout on an open connection that is kept for later use."""
    conn.transport.set_keepalive(KEEPALIVE_S)
    sock = conn.transport.sock
    if hasattr(socket, "TCP_USER_TIMEOUT") and isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_AFTER_S * 1000)


class _Connection(Connection):
    """A Fabric connection that retries opening a session the server refused for now (sshd at
    MaxSessions while earlier sessions wind down): a busy host is not an unreachable one."""

    def create_session(self):
        import time

        for attempt in range(SESSION_RETRIES):
            try:
                return super().create_session()
            except paramiko.ChannelException:
                if attempt == SESSION_RETRIES - 1:
                    raise
                time.sleep(min(0.1 * 2 ** attempt, 1.0))

    def run(self, command, **kwargs):
        logger.debug(f"{self.user}@{self.host}: {command[:300]}")  # -v: what runs where
        return super().run(command, **kwargs)


class ConnectionPool:
    """One open SSH connection per host, reused for every command of a cluster operation
    (a key exchange costs more than the commands we run). At most MAX_CHANNELS_PER_HOST
    commands run at once on one host's connection; the others wait for a free channel."""

    def __init__(self, max_channels: int = MAX_CHANNELS_PER_HOST) -> None:
        self._conns: dict[Host, Connection] = {}
        self._locks: dict[Host, threading.Lock] = {}
        self._slots: dict[Host, threading.BoundedSemaphore] = {}
        self._held = threading.local()  # hosts whose channel slot this thread holds
        self._max = max_channels
        self._guard = threading.Lock()

    @contextmanager
    def channel(self, host: Host) -> Iterator[None]:
        """Hold one of the host's channel slots (re-entrant within a thread)."""
        held = self._held.__dict__.setdefault("hosts", set())
        if host in held:
            yield
            return
        with self._guard:
            slots = self._slots.setdefault(host, threading.BoundedSemaphore(self._max))
        with slots:
            held.add(host)
            try:
                yield
            finally:
                held.discard(host)

    def get(self, host: Host, ssh: SSHSettings) -> Connection:
        with self._guard:
            lock = self._locks.setdefault(host, threading.Lock())
        with lock:  # per host: two threads never open the same connection twice
            conn = self._conns.get(host)
            if conn is None or conn.transport is None or not conn.transport.is_active():
                conn = _new_connection(host, ssh)
                try:
                    conn.open()
                    keep_alive(conn)  # it may idle for minutes between operations
                except BaseException:
                    conn.close()
                    raise
                self._conns[host] = conn
            return conn

    def drop(self, hosts: list[Host]) -> None:
        """Close and forget the connections to ``hosts`` (machines about to be destroyed): a
        later operation on such an address connects afresh and fails fast, rather than
        sending into a connection whose peer vanished."""
        with self._guard:
            conns = [self._conns.pop(h) for h in hosts if h in self._conns]
        for conn in conns:
            conn.close()

    def close(self) -> None:
        with self._guard:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()


@dataclass(frozen=True)
class SSHSettings:
    private_key: Path
    known_hosts: Path
    connect_timeout: float = 10.0
    insecure_skip_host_key_check: bool = False
    # When set, connections are borrowed from it and stay open; otherwise each is closed after use.
    pool: ConnectionPool | None = field(default=None, compare=False, repr=False)


@contextmanager
def connect(host: Host, ssh: SSHSettings) -> Iterator[Connection]:
    if ssh.pool is not None:
        with ssh.pool.channel(host):
            yield ssh.pool.get(host, ssh)
        return
    conn = _new_connection(host, ssh)
    try:
        yield conn
    finally:
        conn.close()


def _new_connection(host: Host, ssh: SSHSettings) -> Connection:
    conn = _Connection(
        host.address, user=host.user, port=host.port,
        # in_stream False: never read our stdin (CI has none, pytest captures it)
        config=Config(overrides={"load_ssh_configs": False,
                                 "run": {"hide": True, "warn": True, "in_stream": False}}),
        connect_timeout=max(1, int(ssh.connect_timeout)),
        connect_kwargs={"key_filename": [str(ssh.private_key)], "look_for_keys": False,
                        "allow_agent": False, "banner_timeout": ssh.connect_timeout,
                        "auth_timeout": ssh.connect_timeout},
    )
    # Fabric trusts any new host key by default; daskfleet verifies against its known_hosts.
    if ssh.insecure_skip_host_key_check:
        conn.client.set_missing_host_key_policy(paramiko.WarningPolicy())
    else:
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        conn.client.load_host_keys(str(ssh.known_hosts))
    return conn


def is_trust_failure(exc: BaseException) -> bool:
    """A host that answered but is not trusted (another host key, none in known_hosts) or does
    not trust us (our key refused): an error to report, unlike a host that is down."""
    return (isinstance(exc, paramiko.BadHostKeyException | paramiko.AuthenticationException)
            or (isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc)))


def _fingerprint(key: paramiko.PKey) -> str:
    from runner.provision.hostkeys import fingerprint

    return fingerprint(f"{key.get_name()} {key.get_base64()}")


def describe_ssh_error(host: Host, exc: BaseException) -> str:
    """One line a user can act on, for the usual ways an SSH connection fails."""
    where = f"{host.name} ({host.user}@{host.address}:{host.port})"
    if isinstance(exc, DaskfleetError):
        return f"{host.name}: {exc}"
    if isinstance(exc, paramiko.BadHostKeyException):
        return (f"{where}: host key mismatch: it presents {_fingerprint(exc.key)}, known_hosts "
                f"expects {_fingerprint(exc.expected_key)}; if the machine was reinstalled, "
                "remove its old entry and add the new one (after checking the fingerprint).")
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return f"{where}: host key is not in known_hosts; add it after checking its fingerprint."
    if isinstance(exc, paramiko.AuthenticationException):
        return f"{where}: SSH key was refused; check ssh.private_key and the host's authorized_keys."
    if isinstance(exc, TimeoutError | OSError) and not isinstance(exc, paramiko.SSHException):
        return f"{where}: unreachable ({exc.__class__.__name__}: {exc}); is it up, is the address right?"
    return f"{where}: {exc.__class__.__name__}: {exc}"


def fan_out_items(items: list[K], fn: Callable[[K], T], what: str,
                  host_of: Callable[[K], Host]) -> dict[K, T]:
    """Run fn on every item in parallel; a result per item, or one HostError naming every host
    that failed while keeping the good results."""
    if not items:
        return {}
    results: dict[K, T] = {}
    failures: dict[Host, BaseException] = {}
    with ThreadPoolExecutor(max_workers=min(32, len(items))) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        for fut, item in futures.items():
            try:
                results[item] = fut.result()
            except Exception as e:  # noqa: BLE001 - collected per host and re-raised below
                failures[host_of(item)] = e
    if failures:
        lines = [f"  {describe_ssh_error(h, e)}" for h, e in failures.items()]
        raise HostError(f"{what} failed on {len(failures)} host(s):\n" + "\n".join(lines),
                        failures=failures, results=results)
    return results


def fan_out(hosts: list[Host], fn: Callable[[Host], T], what: str) -> dict[Host, T]:
    """Run fn on every host in parallel (Fabric's ThreadingGroup, with our error handling)."""
    return fan_out_items(hosts, fn, what, host_of=lambda h: h)


def wait_for_ssh(hosts: list[Host], ssh: SSHSettings, timeout: float, poll: float = 2.0) -> None:
    """Until every host answers over SSH with the key known_hosts holds for it, under one
    deadline. A new VM refuses connections, or presents another key, or refuses our login while
    it boots; so all three are retried. At the deadline one HostError names each host that never
    answered, with the last failure (for a key mismatch: both fingerprints)."""
    import time

    from runner.provision.hostkeys import fingerprint

    deadline = time.monotonic() + timeout

    def wait(host: Host) -> None:
        while True:
            conn = _new_connection(host, ssh)
            try:
                conn.open()
                conn.run("true", warn=False)
                return
            except paramiko.BadHostKeyException as e:
                last: BaseException = DaskfleetError(
                    f"host key mismatch at {host.address}: it presents "
                    f"{fingerprint(f'{e.key.get_name()} {e.key.get_base64()}')}, known_hosts "
                    f"({ssh.known_hosts}) expects "
                    f"{fingerprint(f'{e.expected_key.get_name()} {e.expected_key.get_base64()}')}; "
                    "this is not the VM daskfleet created (or its user data did not run).")
            except Exception as e:  # noqa: BLE001 - booting: refused, timed out, login refused
                last = e
            finally:
                conn.close()
            if time.monotonic() + poll > deadline:
                raise last
            time.sleep(poll)

    fan_out(hosts, wait, f"waiting for SSH (at most {timeout:.0f}s)")
