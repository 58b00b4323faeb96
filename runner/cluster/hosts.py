"""What a machine of the cluster is, as every module's `hosts` output describes it."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Host:
    name: str
    address: str  # where SSH and Ansible reach the host
    role: Literal["scheduler", "worker"]
    user: str = "root"
    port: int = 22
    # The address on the host's own interface: Dask binds to it and is dialled at it. It differs
    # from `address` when the control machine reaches the host through a NAT'd public address.
    private_address: str | None = field(default=None, compare=False)
    # The host's public key line ("ssh-ed25519 AAAA..."), when known: not part of its identity.
    host_key: str | None = field(default=None, compare=False, repr=False)

    @property
    def dask_address(self) -> str:
        return self.private_address or self.address

    @property
    def become(self) -> bool:
        """Whether privileged steps need sudo (every login but root's)."""
        return self.user != "root"

    @classmethod
    def from_dict(cls, d: dict) -> Host:
        return cls(name=d["name"], address=d["address"], role=d["role"],
                   user=d.get("user", "root"), port=int(d.get("port", 22)),
                   private_address=d.get("private_address"), host_key=d.get("host_key"))

    @classmethod
    def from_output(cls, row: dict, use_public: bool) -> Host:
        """A row of a module's `hosts` output: SSH goes to the public address only when the
        control machine is outside the network (use_public) and the host has one."""
        address: str = row["private_address"]
        if use_public:
            address = row.get("public_address") or ""
            if not address:
                from runner.errors import ProvisionError

                raise ProvisionError(f"host {row['name']} has no public address, but the cluster "
                                     "file asks for public addresses (terraform.use_public_ip).")
        return cls(name=row["name"], address=address,
                   role=row["role"], user=row.get("user") or "root", port=int(row.get("port") or 22),
                   private_address=row["private_address"])

    def to_dict(self) -> dict:
        d = {"name": self.name, "address": self.address, "role": self.role,
             "user": self.user, "port": self.port}
        if self.private_address and self.private_address != self.address:
            d["private_address"] = self.private_address
        return d


def _pattern_matches(pattern: str, wanted: str) -> bool:
    """One host pattern of a known_hosts line: a plain name, or a hashed one (`|1|salt|hash`,
    what `HashKnownHosts yes`, Debian's default, writes: HMAC-SHA1 of the name, keyed by salt)."""
    if pattern.startswith("|1|"):
        try:
            salt = base64.b64decode(pattern.split("|")[2])
        except (IndexError, ValueError):
            return False
        digest = hmac.new(salt, wanted.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(pattern, f"|1|{pattern.split('|')[2]}|"
                                            f"{base64.b64encode(digest).decode()}")
    return pattern == wanted


def known_host_key(known_hosts: str, address: str, port: int = 22) -> str | None:
    """The key recorded for `address` in a known_hosts file's text (plain or hashed entries;
    `@cert-authority` and `@revoked` lines are not host keys)."""
    wanted = address if port == 22 else f"[{address}]:{port}"
    for line in known_hosts.splitlines():
        parts = line.split()
        if len(parts) < 3 or line.startswith(("#", "@")):
            continue
        if any(_pattern_matches(p, wanted) for p in parts[0].split(",")):
            return f"{parts[1]} {parts[2]}"
    return None
