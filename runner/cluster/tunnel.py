"""SSH local forwards to the scheduler host: the dashboard (`daskfleet dashboard`) and, on cloud
providers, the client's own route to the scheduler (TLS inside the tunnel; Dask's ports are never
opened beyond the cluster)."""

from __future__ import annotations

import logging
import select
import socket
import threading

import paramiko

from runner.cluster.hosts import Host
from runner.cluster.ssh import SSHSettings, _new_connection, connect, keep_alive
from runner.log import Progress, Say

logger = logging.getLogger(__name__)


class Forward:
    """127.0.0.1:<free port> -> (remote_host, remote_port) as seen from `via`, over one SSH
    connection of its own; every accepted connection becomes a direct-tcpip channel. A lost SSH
    connection is made again for the next connection (the Dask client reconnects through it)."""

    def __init__(self, via: Host, remote_host: str, remote_port: int, ssh: SSHSettings,
                 local_port: int = 0):
        self.remote = (remote_host, remote_port)
        self._via, self._ssh = via, ssh
        # A refused forward (the scheduler not listening yet while we poll for it) is an answer
        # we handle, not an error to print: paramiko would log each one to stderr.
        logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
        self._lock = threading.Lock()
        self._conn = self._connect()
        self.reconnects = 0
        self._listener = socket.create_server(("127.0.0.1", local_port))
        self.local_port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="daskfleet-forward").start()

    def _connect(self):
        conn = _new_connection(self._via, self._ssh)
        conn.open()
        keep_alive(conn)  # a link down for longer than DEAD_AFTER_S is given up and made again
        return conn

    @property
    def transport(self) -> paramiko.Transport:
        """The SSH transport, made again if the last one died (a link down for longer than
        DEAD_AFTER_S, the host rebooted)."""
        with self._lock:
            if not self._closed.is_set() and not self._conn.transport.is_active():
                try:
                    self._conn.close()
                finally:
                    self._conn = self._connect()
                    self.reconnects += 1
            return self._conn.transport

    def probe(self, timeout: float = 5.0) -> bool:
        """Whether the remote port accepts a connection (seen from the SSH host)."""
        try:
            chan = self.transport.open_channel("direct-tcpip", self.remote, ("127.0.0.1", 0),
                                               timeout=timeout)
        except (paramiko.ChannelException, paramiko.SSHException, OSError, EOFError):
            return False
        chan.close()
        return True

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._pipe, args=(sock, peer), daemon=True).start()

    def _pipe(self, sock: socket.socket, peer) -> None:
        try:
            chan = self.transport.open_channel("direct-tcpip", self.remote, peer, timeout=10)
        except (paramiko.ChannelException, paramiko.SSHException, OSError, EOFError):
            sock.close()  # the client sees a closed connection, as with a refused port
            return
        try:
            while not self._closed.is_set():
                watched: list[socket.socket | paramiko.Channel] = [sock, chan]
                ready, _, _ = select.select(watched, [], [], 0.5)
                if sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(65536)
                    if not data:
                        break
                    sock.sendall(data)
        except OSError:
            pass  # a reset on either side ends this connection only
        finally:
            chan.close()
            sock.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._conn.close()


def open_dashboard(scheduler: Host, remote_port: int, ssh: SSHSettings, local_port: int,
                   progress: Progress | None = None,
                   stop: threading.Event | None = None) -> None:
    """Forward 127.0.0.1:local_port to the dashboard until Ctrl-C (or `stop` is set)."""
    say = Say(progress, logger)
    stop = stop or threading.Event()
    with connect(scheduler, ssh):  # fail here, with the usual SSH message, if the host is down
        pass
    fwd = Forward(scheduler, scheduler.dask_address, remote_port, ssh, local_port=local_port)
    try:
        say(f"dashboard: http://127.0.0.1:{fwd.local_port}/status (tunnel to "
            f"{scheduler.name} {scheduler.dask_address}:{remote_port}); Ctrl-C closes it")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        fwd.close()
    say("dashboard: tunnel closed")
