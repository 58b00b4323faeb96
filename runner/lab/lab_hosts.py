"""A new lab's plain hosts, made: the record, the lab's key, the bridge, the object store's
server spawned (when asked for), each host booted (`boot_host`, with its own host key and a fixed
MAC) and waited for until its sshd answers; `create_host` also boots one again on `lab restart`.

Apart from runner.lab.lab, whose `up` calls it when no lab is running.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import LabError
from runner.lab.addresses import INDEX, NETNS_PREFIX, SUBNET_PREFIX
from runner.lab.machine import (
    BRIDGE,
    BRIDGE_ADDRESS,
    BRIDGE_MAC,
    FIRST_HOST_OCTET,
    READY_TIMEOUT_S,
    BootSpec,
    LabHost,
    boot_host,
    link_exists,
    port_open,
    run,
)
from runner.log import Progress, Say

if TYPE_CHECKING:
    from runner.lab.lab import Lab

logger = logging.getLogger(__name__)


def fresh_hosts(lab: Lab, n_hosts: int, user: str, progress: Progress | None) -> list[LabHost]:
    say = Say(progress, logger)
    if link_exists(BRIDGE):
        raise LabError(
            f"lab: bridge {BRIDGE} exists but no lab is recorded in {lab.state_dir} "
            "(another lab state dir?); run `daskfleet lab down` with that DASKFLEET_LAB_DIR."
        )
    hosts = [
        LabHost(name=f"lab{i}", address=f"{SUBNET_PREFIX}{FIRST_HOST_OCTET + i - 1}",
                netns=f"{NETNS_PREFIX}lab{i}", user=user)
        for i in range(1, n_hosts + 1)
    ]
    try:
        create(lab, hosts, user, progress)
    except BaseException:
        say("lab: bring-up failed; removing what was created")
        lab.down(progress=lambda *_: None)
        raise
    return hosts


def create(lab: Lab, hosts: list[LabHost], user: str, progress: Progress | None) -> None:
    say = Say(progress, logger)
    lab.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(lab.state_dir, 0o700)
    # Record first, so `lab down` can always clean up a half-made lab.
    lab.write_record({"hosts": [asdict(h) for h in hosts], "user": user, "cloud": None})
    if not lab.key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "daskfleet-lab",
              "-f", str(lab.key)])
    run(["ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge"])
    run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    # the object store's server imports for seconds: started first, waited for in `up`
    if lab.want_store:
        from runner.lab import objectstore

        lab.spawned_store = objectstore.spawn(lab.state_dir / "objectstore", lab.region)
    known = []
    for host in hosts:
        say(f"lab: creating {host.name} ({host.address})")
        known.append(create_host(lab, host))
    lab.known_hosts.write_text("".join(known))
    deadline = time.monotonic() + READY_TIMEOUT_S
    for host in hosts:
        while not port_open(host.address, host.port, timeout=0.5):
            if time.monotonic() > deadline:
                log = (lab.host_dir(host.name) / "init.log").read_text()[-2000:]
                raise LabError(
                    f"lab: sshd on {host.name} ({host.address}) did not come up within "
                    f"{READY_TIMEOUT_S:.0f}s. Its log:\n{log}"
                )
            time.sleep(0.1)
    who = "" if user == "root" else f", user {user}"
    say(f"lab: {len(hosts)} hosts up{who}; key {lab.key}, known_hosts {lab.known_hosts}")


def create_host(lab: Lab, host: LabHost) -> str:
    """Boot a plain lab host; returns its known_hosts line."""
    hdir = lab.host_dir(host.name)
    hdir.mkdir(parents=True, exist_ok=True)
    hostkey = hdir / "ssh_host_ed25519_key"
    if not hostkey.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name,
              "-f", str(hostkey)])
    # A fixed MAC per address: a restarted host is reachable at once, with no stale ARP
    # entry on the other machines pointing at its previous interface.
    mac = f"02:df:{INDEX:02x}:00:00:{int(host.address.rsplit('.', 1)[1]):02x}"
    boot_host(BootSpec(
        hostname=host.name, address=host.address, netns=host.netns, veth=host.veth, mac=mac,
        hdir=hdir, host_keys=(str(hostkey),), user=host.user, port=host.port,
        authorized_keys=Path(str(lab.key) + ".pub").read_text(),
    ))
    pub = Path(str(hostkey) + ".pub").read_text().split()
    return f"{host.address} {pub[0]} {pub[1]}\n"
