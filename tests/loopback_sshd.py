"""A throwaway sshd on 127.0.0.1 with its own host key and one authorized client key, in a temp
folder: real SSH for tests that need no lab (nothing leaves loopback). Runs as this user (as
root in CI); the client logs in as the same user."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class LoopbackSshd:
    port: int
    host_key: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    workdir: Path
    pid: int  # the listening sshd's (each connection is served by a child of it)

    def known_hosts(self) -> Path:
        """A known_hosts file that trusts this sshd's host key."""
        path = self.workdir / "known_hosts"
        path.write_text(f"[127.0.0.1]:{self.port} {self.host_key}\n")
        return path


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, timeout=30)


def public_key(path: Path) -> str:
    key_type, key_b64 = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{key_type} {key_b64}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, deadline_s: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_s
    delay = 0.05
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {deadline_s}s")


@contextlib.contextmanager
def loopback_sshd(d: Path) -> Iterator[LoopbackSshd]:
    """Start the sshd in folder ``d`` (made); stopped at the end."""
    d.mkdir(parents=True)
    keygen(d / "host_key")
    keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    config = d / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"PidFile {d / 'sshd.pid'}",
        f"HostKey {d / 'host_key'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "",
    ]))
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    log = (d / "sshd.log").open("w")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(port, proc)
        yield LoopbackSshd(port, public_key(d / "host_key"), d / "client_key", d, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
