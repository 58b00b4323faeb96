"""What a machine of the cluster is, as every module's `hosts` output describes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    role: Literal["scheduler", "worker"]
    user: str = "root"
    port: int = 22
    # The host's public key line ("ssh-ed25519 AAAA..."), when known: not part of its identity.
    host_key: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> Host:
        return cls(name=d["name"], address=d["address"], role=d["role"],
                   user=d.get("user", "root"), port=int(d.get("port", 22)),
                   host_key=d.get("host_key"))

    def to_dict(self) -> dict:
        return {"name": self.name, "address": self.address, "role": self.role,
                "user": self.user, "port": self.port}


def known_host_key(known_hosts: str, address: str, port: int = 22) -> str | None:
    """The key recorded for `address` in a known_hosts file's text (plain, not hashed, entries)."""
    wanted = address if port == 22 else f"[{address}]:{port}"
    for line in known_hosts.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#") and wanted in parts[0].split(","):
            return f"{parts[1]} {parts[2]}"
    return None
