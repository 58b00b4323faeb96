"""SSH host keys that daskfleet generates for new cloud VMs, and the known_hosts file it writes.

A VM gets its host key through user data (cloud-init `ssh_keys`), so known_hosts is written before
the first connection: no trust on first use. Keys live in .daskfleet/<cluster>/host_keys/ (0600).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def ensure(directory: Path, names: list[str]) -> dict[str, dict[str, str]]:
    """name -> {private_key, public_key} (OpenSSH formats); existing keys are kept, so a VM that
    is replaced comes back with the same host key."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    keys = {}
    for name in names:
        priv, pub = directory / name, directory / f"{name}.pub"
        if not (priv.exists() and pub.exists()):
            key = ed25519.Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
            line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH)
            _write(priv, pem, 0o600)
            _write(pub, line + f" daskfleet-{name}\n".encode(), 0o644)
        keys[name] = {"private_key": priv.read_text(), "public_key": pub.read_text().strip()}
    return keys


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def fingerprint(public_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line ("ssh-ed25519 AAAA... comment")."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def entry_host(address: str, port: int = 22) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def write_known_hosts(path: Path, entries: dict[str, str]) -> None:
    """Set the key of each host pattern (entry_host form) in `path`, replacing its old lines and
    keeping every other line; written to a temp file and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in old
            if not (line.split() and set(line.split()[0].split(",")) & set(entries))]
    new = [f"{host} {' '.join(key.split()[:2])}" for host, key in sorted(entries.items())]
    _write(path, ("\n".join(kept + new) + "\n").encode(), 0o644)
