"""How much of a host's memory each cluster on it has committed, so clusters that share hosts
never commit more than the host has.

Each cluster records its claim on each of its worker hosts in MEMORY_DIR/<cluster> (root's: no
cluster's user can change another's), as a fraction of the host's memory or a number of bytes:
- `memory_limit: auto` claims `dask.memory_share` (default 1: the whole host; its workers split
  95 % of it);
- `memory_limit: 0.3` (a fraction per worker) claims 0.3 x its workers on the host;
- `memory_limit: 4GiB` claims 4 GiB x its workers.
Before a cluster starts workers on a host, it reads the others' claims there, under a lock, and
is refused when its own would take the total over the host's memory; the record is removed
when its last worker there stops (`down`, or a `scale` that leaves the host).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass

from runner.cluster.hosts import Host
from runner.cluster.process_settings import privileged
from runner.cluster.ssh import SSHSettings, connect, fan_out
from runner.errors import ClusterStartError
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

MEMORY_DIR = "/var/lib/daskfleet/memory"


@dataclass(frozen=True)
class Claim:
    fraction: float = 0.0  # of the host's memory
    bytes: int = 0

    def text(self) -> str:
        return f"bytes {self.bytes}" if self.bytes else f"fraction {self.fraction:.6f}"


def claim(memory_limit: str, memory_share: float | None, workers: int) -> Claim:
    """What ``workers`` workers of a cluster claim on one host."""
    if memory_limit == "auto":
        return Claim(fraction=memory_share if memory_share is not None else 1.0)
    try:
        value = float(memory_limit)
    except ValueError:
        from dask.utils import parse_bytes

        return Claim(bytes=parse_bytes(memory_limit) * workers)
    # dask reads a number up to 1 as a fraction of the host, a larger one as bytes
    return Claim(fraction=value * workers) if value <= 1 else Claim(bytes=int(value) * workers)


# Run as root on the host: under the folder's lock, the other clusters' claims, then this
# cluster's recorded unless it takes the total over the host's memory (exit 3, the others
# printed). Claims are "fraction F" or "bytes B"; bytes count against MemTotal.
COMMIT = r"""
set -eu
d=$1 cluster=$2 kind=$3 value=$4 strict=$5
mkdir -p "$d" && chmod 755 "$d"
exec 9>"$d/.lock"
flock -w 60 9
total_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
frac() { case $1 in bytes) awk -v b="$2" -v t="$total_kb" 'BEGIN {printf "%.6f", b / (t * 1024)}';;
         *) printf '%s' "$2";; esac; }
others=0
for f in "$d"/*; do
  [ -f "$f" ] || continue
  name=${f##*/}
  [ "$name" = "$cluster" ] && continue
  read -r k v < "$f" || continue
  share=$(frac "$k" "$v")
  echo "claim $name $share"
  others=$(awk -v a="$others" -v b="$share" 'BEGIN {printf "%.6f", a + b}')
done
mine=$(frac "$kind" "$value")
echo "mine $mine"
if awk -v a="$others" -v b="$mine" 'BEGIN {exit !(a + b > 1.000001)}'; then
  [ "$strict" = 1 ] && exit 3
  echo "over"
  exit 0
fi
printf '%s %s\n' "$kind" "$value" > "$d/.$cluster.tmp"
mv "$d/.$cluster.tmp" "$d/$cluster"
"""

RELEASE = r"""
set -eu
d=$1 cluster=$2
[ -d "$d" ] || exit 0
exec 9>"$d/.lock"
flock -w 60 9
rm -f "$d/$cluster"
"""


def _script(body: str, *args: str) -> str:
    return "bash -c " + shlex.quote(body) + " daskfleet-memory " + shlex.join(args)


def commit(cluster: str, claims: dict[Host, Claim], strict: set[Host], ssh: SSHSettings,
           progress: Progress | None = None, key: str = "dask.memory_share") -> None:
    """Record this cluster's claim on each host; refuse (ClusterStartError naming the host and
    the clusters there) where a host in ``strict`` (workers about to start) would be committed
    over its memory; elsewhere (workers already running) only warn."""
    say = Say(progress, logger)

    def one(h: Host) -> tuple[int, str]:
        c = claims[h]
        kind, value = c.text().split()
        with connect(h, ssh) as conn:
            r = conn.run(privileged(h, _script(COMMIT, MEMORY_DIR, cluster, kind, value,
                                               "1" if h in strict else "0")), warn=True)
        return r.exited, r.stdout

    results = fan_out(list(claims), one, "recording the memory claims")
    refused = []
    for h, (code, out) in results.items():
        others = [line.split()[1:] for line in out.splitlines() if line.startswith("claim ")]
        mine = next((line.split()[1] for line in out.splitlines() if line.startswith("mine ")),
                    "?")
        held = ", ".join(f"{name} {float(share):.0%}" for name, share in others) or "none"
        if code == 3:
            refused.append(f"  {h.name}: this cluster would commit {float(mine):.0%} of its "
                           f"memory, and the other clusters there already commit: {held}")
        elif code != 0:
            raise ClusterStartError(f"{h.name}: could not record the cluster's memory claim in "
                                    f"{MEMORY_DIR} (exit {code}): {out.strip()[-300:]}")
        elif "over" in out.split():
            say.warning(f"WARNING: {h.name}: the clusters there commit more than its memory "
                        f"(this one {float(mine):.0%}; others: {held}); give each a "
                        f"{key} that adds up to 1 at most")
    if refused:
        raise ClusterStartError(
            "memory: starting these workers would commit more memory than the host has:\n"
            + "\n".join(refused) + f"\nGive each cluster on shared hosts a {key} (a fraction "
            "of each host's memory; together at most 1), or an explicit dask.memory_limit, and "
            f"run `up` again; a cluster that is gone releases its claim with `daskfleet down` "
            f"(or remove its file in {MEMORY_DIR} on the host). Nothing was started.")


def release(cluster: str, hosts: list[Host], ssh: SSHSettings) -> None:
    """Remove this cluster's claim from ``hosts`` (no worker of it runs there any more)."""
    def one(h: Host) -> None:
        with connect(h, ssh) as conn:
            conn.run(privileged(h, _script(RELEASE, MEMORY_DIR, cluster)), warn=True)

    fan_out(hosts, one, "releasing the memory claims")
