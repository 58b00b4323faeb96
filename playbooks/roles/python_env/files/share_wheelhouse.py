"""Serve one wheelhouse archive to the cluster's other nodes over HTTP, then exit.

Run on the node that received the archive from the control machine (python_env's seed), so the
control machine's uplink carries it once whatever the number of nodes. Usage:

    share_wheelhouse.py ARCHIVE PEER PORTS DOWNLOADS LIFETIME_S LOG

Binds the address this node reaches PEER from (its private address: the route's source), on the
first free port of PORTS ("40000:40099": a range the cluster's firewall opens between its nodes),
serves GET /<archive's name> and nothing else, and exits after DOWNLOADS complete downloads or
LIFETIME_S seconds, whichever comes first. It detaches, so Ansible's task returns at once; it
prints {"address", "port", "pid"} as JSON once it is listening.

Integrity is not this server's job: every node checks the archive against the sha256 the control
machine computed (get_url's checksum), and the wheels inside against the lock's hashes (uv's
--require-hashes). What it serves is public wheels and the project's own code, no secret.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def source_address(peer: str) -> str:
    """The local address this host sends from to reach PEER (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((peer, 9))
        return s.getsockname()[0]


def port_range(text: str) -> range:
    low, _, high = text.partition(":")
    lo, hi = int(low), int(high or low)
    if not 1024 <= lo <= hi <= 65535:
        raise ValueError(f"ports {text!r}: want LOW:HIGH within 1024-65535")
    return range(lo, hi + 1)


class Share(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], archive: str, downloads: int):
        super().__init__(address, Handler)
        self.archive = archive
        self.path_served = "/" + os.path.basename(archive)
        self.size = os.path.getsize(archive)
        self.left = downloads
        self.lock = threading.Lock()

    def served_one(self) -> None:
        with self.lock:
            self.left -= 1
            done = self.left <= 0
        if done:  # shutdown() waits for serve_forever(): not from its own thread
            threading.Thread(target=self.shutdown, daemon=True).start()


def bind(address: str, ports: range, archive: str, downloads: int) -> Share:
    """The server on the first free port of PORTS (Dask may hold some of them on a running node)."""
    last: OSError | None = None
    for port in ports:
        try:
            return Share((address, port), archive, downloads)
        except OSError as e:
            last = e
    raise OSError(f"no free port in {ports.start}:{ports.stop - 1} on {address}: {last}")


class Handler(BaseHTTPRequestHandler):
    server: Share

    def do_HEAD(self) -> None:
        self._send(body=False)

    def do_GET(self) -> None:
        self._send(body=True)

    def _send(self, body: bool) -> None:
        if self.path != self.server.path_served:
            self.send_error(404, "only the wheelhouse archive is served here")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(self.server.size))
        self.end_headers()
        if not body:
            return
        with open(self.server.archive, "rb") as f:
            sent = self.connection.sendfile(f)  # zero-copy: the seed is installing meanwhile
        if sent == self.server.size:
            self.server.served_one()


def main(argv: list[str]) -> int:
    archive, peer, ports, downloads, lifetime, log = argv
    server = bind(source_address(peer), port_range(ports), archive, int(downloads))
    read_end, write_end = os.pipe()
    if os.fork():  # the parent reports where the child listens, and returns to Ansible
        os.close(write_end)
        with os.fdopen(read_end) as r:
            print(r.read(), flush=True)
        return 0
    os.close(read_end)
    os.setsid()  # outlives the SSH session that started it
    host, port = server.server_address[:2]
    with os.fdopen(write_end, "w") as w:
        w.write(json.dumps({"address": host, "port": port, "pid": os.getpid()}))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)  # nothing of the SSH session's pipes stays open: Ansible's task ends
    threading.Timer(float(lifetime), server.shutdown).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
