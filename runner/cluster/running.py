"""What runs for a cluster, and closing what should not: each wanted process's status, every
process the hosts' units (and an older daskfleet's pid files) record, and the retiring (through the
scheduler, so data moves) and stopping of those that go.

The lower half of the reconcile (runner.cluster.reconcile imports it); `scale`, `stop` and
`up`'s removal of machines use it too, without the rest of the reconcile.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from runner.cluster.hosts import Host
from runner.cluster.process_settings import RUN_DIR, ProcStatus
from runner.cluster.processes import SUPERVISE_DIR, UNIT_DIR, RemoteProcess
from runner.cluster.ssh import connect, fan_out, fan_out_items
from runner.errors import HostError
from runner.log import Progress, Say

if TYPE_CHECKING:
    from runner.cluster.cluster import Cluster

logger = logging.getLogger(__name__)


T = TypeVar("T")


def per_process(procs: list[RemoteProcess], fn: Callable[[RemoteProcess], T], what: str
                ) -> dict[RemoteProcess, T]:
    """fan_out over processes (several may share a host): a result per process, or one HostError
    naming every host that failed."""
    return fan_out_items(procs, fn, what, host_of=lambda p: p.host)


def process_states(cluster: Cluster) -> dict[RemoteProcess, ProcStatus]:
    ssh = cluster.ssh()
    procs = cluster.wanted()
    with ThreadPoolExecutor(max_workers=min(32, len(procs))) as pool:
        return dict(zip(procs, pool.map(lambda p: p.status(ssh), procs), strict=True))


def running_names(cluster: Cluster, hosts: list[Host]) -> dict[Host, list[str]]:
    """What each reachable host runs for this cluster: its units (named by their
    X-Daskfleet-Cluster line: cluster names may be each other's prefixes), and an older
    daskfleet's pid files and supervisor scripts: host -> process names. Unreachable hosts are
    left out."""
    prefix = shlex.quote(f"{cluster.spec.name}-")
    own = shlex.quote(f"{RUN_DIR}/{cluster.spec.name}")
    mark = shlex.quote(f"X-Daskfleet-Cluster={cluster.spec.name}")
    # (the names in the cluster's own folder carry no prefix: they are marked "own:")
    cmd = (f"{{ grep -l -x -F {mark} {UNIT_DIR}/daskfleet-*.service | "
           "xargs -r sed -n 's/^X-Daskfleet-Process=/own:/p'; "
           f"cd {own} 2>/dev/null && ls -1 -- *.pid | sed 's/^/own:/'; "
           f"cd {RUN_DIR} 2>/dev/null && ls -1 -- {prefix}*.pid; "
           f"cd {SUPERVISE_DIR} 2>/dev/null && ls -1 -- {prefix}*.sh; }} 2>/dev/null; true")

    def names(h: Host) -> list[str]:
        with connect(h, cluster.ssh()) as c:
            out = c.run(cmd).stdout.split()
        found = [(n.removeprefix("own:") if n.startswith("own:")
                  else n.removeprefix(f"{cluster.spec.name}-")).removesuffix(".pid")
                 .removesuffix(".sh") for n in out]
        return sorted(set(found), key=found.index)

    try:
        return fan_out(hosts, names, "listing the cluster's processes")
    except HostError as e:
        return e.results


def recorded(cluster: Cluster, hosts: list[Host]) -> list[RemoteProcess]:
    """Every process the cluster's units on ``hosts`` record, wanted or not (a worker of a
    host dropped from the file, one beyond the wanted count, ...), as the process to stop."""
    sched = cluster.wanted(n_workers=0)[0]  # the scheduler alone: no worker count needed
    settings = cluster.settings()
    found = []
    for host, names in running_names(cluster, hosts).items():
        for name in names:
            if name == "scheduler":
                found.append(RemoteProcess(host, "scheduler", host, settings))
            elif name.startswith(f"{host.name}-w") and name.rsplit("-w", 1)[1].isdigit():
                found.append(RemoteProcess(host, "worker", sched.host, settings,
                                           index=int(name.rsplit("-w", 1)[1])))
    return found


def close_unwanted(cluster: Cluster, extra_hosts: Sequence[Host] = (),
                   progress: Progress | None = None) -> list[str]:
    """Close what runs for this cluster but is no longer wanted (a worker host removed from the
    file, worker_on_scheduler turned off, ...): retired through the scheduler first (its data
    moves to the workers that stay), then stopped. Returns `name@host` of each."""
    say = Say(progress, logger)
    wanted = {(p.host.name, p.name) for p in cluster.wanted()}
    hosts = {h.name: h for h in [*cluster.hosts(), *extra_hosts]}
    going = [p for p in recorded(cluster, list(hosts.values()))
             if (p.host.name, p.name) not in wanted]
    if not going:
        return []
    say("closing what is no longer wanted: "
        + ", ".join(f"{p.name}@{p.host.name}" for p in going))
    return _retire_and_stop(cluster, going, progress, "stopping unwanted processes")


def close_hosts(cluster: Cluster, going: list[Host],
                progress: Progress | None = None) -> list[str]:
    """Before Terraform removes ``going`` (a lower worker_count, hosts dropped from the file):
    retire their workers through the scheduler, so their data moves to the workers that stay,
    then stop them. Returns `name@host` of each."""
    say = Say(progress, logger)
    procs = [p for p in recorded(cluster, going) if p.kind == "worker"]
    if not procs:
        return []
    say(f"retiring the workers of the machines that go ({', '.join(h.name for h in going)})"
        f" before they are removed: {', '.join(f'{p.name}@{p.host.name}' for p in procs)}")
    return _retire_and_stop(cluster, procs, progress, "stopping the workers of machines that go")


def _retire_and_stop(cluster: Cluster, procs: list[RemoteProcess], progress: Progress | None,
                     what: str) -> list[str]:
    """Retire the workers among ``procs`` (their data moves to the others), then stop all of
    them. Returns `name@host` of each."""
    retire(cluster, [p for p in procs if p.kind == "worker"], progress)
    per_process(procs, lambda p: p.stop(cluster.ssh()), what)
    return [f"{p.name}@{p.host.name}" for p in procs]


def retire(cluster: Cluster, workers: list[RemoteProcess], progress: Progress | None = None,
           scheduler_running: bool | None = None) -> None:
    """Retire workers through the scheduler (their data moves to the others) when it runs
    (``scheduler_running``: known already; otherwise asked over SSH). Each is held first: the
    retirement ends it, and systemd must not start it again before its stop."""
    say = Say(progress, logger)
    if not workers:
        return
    names = [p.name for p in workers]
    if scheduler_running is None:
        sched = cluster.wanted()[0]
        scheduler_running = process_states(cluster).get(sched, ProcStatus("dead")).state \
            == "running"
    if not scheduler_running:
        return
    try:
        per_process(workers, lambda p: p.hold(cluster.ssh()), "holding workers before retiring")
    except HostError as e:  # unreachable: nothing restarts it there before its stop either
        say.warning(f"WARNING: {e}")
    try:
        cluster.client().retire_workers(names=names, close_workers=True, remove=True)
    except Exception as e:  # noqa: BLE001 - retiring moves data; stopping must go on
        say.warning(f"WARNING: could not retire {', '.join(names)} first ({e}); stopping them")

