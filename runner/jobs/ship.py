"""Ship a prepared dataset (a folder of parquet shards) to the worker hosts: each shard to
``copies`` of them, so the control machine sends about ``copies`` x the corpus in all, whatever
the number of hosts, and each host stores about ``copies / hosts`` of it.

On each host the shards land in /var/lib/daskfleet/data/<cluster>/<digest>/ (a folder the playbook
makes readable by the login user and the cluster's own user only: another cluster on the host
cannot read it). A shard a host holds already is not sent again, so re-running a job sends
nothing, and a job after a scale sends the new hosts their share only. Each shard is renamed into
place whole: a reader never sees half of one.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from collections.abc import Sequence
from pathlib import Path

from runner.cluster.hosts import Host
from runner.cluster.ssh import SSHSettings, connect, fan_out
from runner.errors import HostError

DATA_DIR = "/var/lib/daskfleet/data"


def remote_dir(digest: str, cluster: str | None = None) -> str:
    """Where a dataset lives on a node: the cluster's own folder (an ephemeral cluster's
    instances serve one cluster: no ``cluster``)."""
    return f"{DATA_DIR}/{cluster}/{digest}" if cluster else f"{DATA_DIR}/{digest}"


def held(hosts: Sequence[Host], ssh: SSHSettings, cluster: str, digest_prefix: str = ""
         ) -> dict[str, dict[str, int]]:
    """Host name -> {"<dataset digest>/<shard>": bytes}: the shards each host holds in the
    cluster's data folder (of the datasets whose digest starts so; every dataset by default)."""
    if not re.fullmatch(r"[0-9a-f]*", digest_prefix):
        raise ValueError(f"a dataset digest is hexadecimal: {digest_prefix!r}")
    base = shlex.quote(f"{DATA_DIR}/{cluster}")

    def listing(host: Host) -> dict[str, int]:
        with connect(host, ssh) as c:
            out = c.run(f"cd {base} 2>/dev/null && find {digest_prefix}* -maxdepth 1 -name "
                        "'*.parquet' -printf '%p %s\\n' 2>/dev/null || true",
                        warn=True, hide=True).stdout
        return {name: int(size) for name, size in (line.rsplit(" ", 1)
                                                   for line in out.splitlines() if line)}

    return {h.name: found for h, found in fan_out(list(hosts), listing,
                                                  "listing the shards the hosts hold").items()}


def placement(sizes: dict[str, int], hosts: list[str], copies: int) -> dict[str, list[str]]:
    """Shard name -> the ``min(copies, len(hosts))`` hosts that hold it: largest shards first,
    each to the hosts holding the fewest bytes so far (ties: the order of ``hosts``), so every
    host stores about ``copies / len(hosts)`` of the corpus. The same inputs give the same
    placement, so a second run finds every shard where the first put it."""
    if not hosts:
        raise ValueError("no host to place the shards on")
    n = min(copies, len(hosts))
    load = dict.fromkeys(hosts, 0)
    out: dict[str, list[str]] = {}
    for name in sorted(sizes, key=lambda f: (-sizes[f], f)):
        chosen = sorted(hosts, key=lambda h: (load[h], hosts.index(h)))[:n]
        for h in chosen:
            load[h] += sizes[name]
        out[name] = chosen
    return {name: out[name] for name in sizes}


def holders_or_all(holders: list[list[str]], n_hosts: int) -> list[list[str]] | None:
    """Per shard, the hosts that hold it; None when every one of the ``n_hosts`` holds every
    shard (no read needs restricting)."""
    return None if all(len(h) == n_hosts for h in holders) else holders


class ShipResult:
    """Where each shard is (``holds``: host -> shard names) and what was sent (``sent``: host ->
    the shard names sent now; empty for a host that had its share)."""

    def __init__(self, holds: dict[Host, list[str]], sent: dict[Host, list[str]],
                 sizes: dict[str, int]):
        self.holds, self.sent, self.sizes = holds, sent, sizes
        self._by_shard: dict[str, list[Host]] = {}  # one pass: hosts_of is asked per shard
        for host, names in holds.items():
            for name in names:
                self._by_shard.setdefault(name, []).append(host)

    def hosts_of(self, shard: str) -> list[Host]:
        return list(self._by_shard.get(shard, []))

    def dask_holders(self) -> list[list[str]] | None:
        """Per shard, in the order shipped, the Dask addresses of the hosts that hold it; None
        when every host holds every shard (``holders_or_all``)."""
        return holders_or_all([[h.dask_address for h in self.hosts_of(f)] for f in self.sizes],
                              len(self.holds))

    def summary(self) -> str:
        """What was sent where, for the progress line."""
        total = sum(self.sizes.values())
        sent = sum(self.sizes[f] for names in self.sent.values() for f in names)
        copies = min((len(self.hosts_of(f)) for f in self.sizes), default=0)
        share = ", ".join(f"{h.name} {len(names)}" for h, names in self.holds.items())
        return (f"{len(self.sizes)} shards ({_mb(total)}), {copies} host(s) each (shards per "
                f"host: {share}); sent {_mb(sent)} to "
                f"{sum(1 for v in self.sent.values() if v)} host(s), the rest there already")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def ship(local_dir: Path, digest: str, files: Sequence[str], hosts: list[Host],
         ssh: SSHSettings, cluster: str, copies: int | None = None) -> ShipResult:
    """Send each shard (``files`` of ``local_dir``) to ``copies`` of ``hosts`` (every host when
    None), but not to a host that holds it already."""
    dest = remote_dir(digest, cluster)
    base = f"{DATA_DIR}/{cluster}"
    sizes = {f: (local_dir / f).stat().st_size for f in files}
    if not hosts:
        return ShipResult({}, {}, sizes)
    hosts = sorted(hosts, key=lambda h: h.name)
    where = placement(sizes, [h.name for h in hosts], copies or len(hosts))
    wanted = {h: [f for f in files if h.name in where[f]] for h in hosts}

    def send(host: Host) -> list[str]:
        with connect(host, ssh) as c:
            if not c.run(f"test -d {shlex.quote(base)} -a -w {shlex.quote(base)}",
                         warn=True, hide=True).ok:
                raise HostError(
                    f"{host.name}: {base} is missing or not writable by {host.user}; the "
                    f"cluster's data folder is made by the playbook: run `daskfleet up` "
                    "first.", failures={host: RuntimeError(base)})
            there = set(c.run(f"ls -1 {shlex.quote(dest)} 2>/dev/null || true",
                              hide=True).stdout.split())
            missing = [f for f in wanted[host] if f not in there]
            if not missing:
                return []
            # this command's own: another machine's or process's ship of the same shards
            # never shares it (the renames make the last whole copy win)
            stage = f"{base}/.{digest}.{socket.gethostname()}.{os.getpid()}"
            staging = shlex.quote(stage)
            c.run(f"rm -rf {staging} && mkdir -p {staging} {shlex.quote(dest)}", hide=True)
            # file by file over SFTP (no archive of the host's share on this machine's disk),
            # into a staging folder beside the target, then each shard renamed into place whole
            for f in missing:
                c.put(str(local_dir / f), f"{stage}/{f}")
            c.run(f"find {staging} -maxdepth 1 -type f -exec mv -f -t {shlex.quote(dest)} {{}} + "
                  f"&& rmdir {staging}", hide=True)
            return missing

    sent = fan_out(hosts, send, "shipping the dataset")
    return ShipResult(wanted, sent, {f: sizes[f] for f in files})
