"""The reconciler, in the spirit of distributed's SpecCluster: list what runs for the cluster, close
running minus wanted, open wanted minus running, wait on the set of names, roll back on any error.

A running process counts as wanted only if it runs this machine's environment and the memory
limit its host's worker count gives it; otherwise it is restarted.
"""

from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from runner import state
from runner.cluster import readiness
from runner.cluster.hosts import Host
from runner.cluster.processes import RUN_DIR, ProcStatus, RemoteProcess
from runner.cluster.ssh import connect, fan_out, fan_out_items
from runner.errors import ClusterStartError, DaskfleetError, HostError

if TYPE_CHECKING:
    from runner.cluster.cluster import Cluster


def per_process(procs: list[RemoteProcess], fn, what: str) -> dict[RemoteProcess, object]:
    """fan_out over processes (several may share a host): a result per process, or one HostError
    naming every host that failed."""
    return fan_out_items(procs, fn, what, host_of=lambda p: p.host)


def process_states(cluster: Cluster) -> dict[RemoteProcess, ProcStatus]:
    ssh = cluster.ssh()
    procs = cluster.wanted()
    with ThreadPoolExecutor(max_workers=min(32, len(procs))) as pool:
        return dict(zip(procs, pool.map(lambda p: p.status(ssh), procs), strict=True))


def running_names(cluster: Cluster, hosts: list[Host]) -> dict[Host, list[str]]:
    """What runs for this cluster on each reachable host, by its pid files (named after the
    cluster): host -> process names. Unreachable hosts are left out."""
    prefix = f"{cluster.spec.name}-"
    cmd = f"cd {RUN_DIR} 2>/dev/null && ls -1 -- {shlex.quote(prefix)}*.pid 2>/dev/null; true"

    def names(h: Host) -> list[str]:
        with connect(h, cluster.ssh()) as c:
            out = c.run(cmd).stdout.split()
        return [n.removeprefix(prefix).removesuffix(".pid") for n in out]

    try:
        return fan_out(hosts, names, "listing the cluster's processes")
    except HostError as e:
        return e.results


def close_unwanted(cluster: Cluster, extra_hosts: list[Host] = (), progress=print) -> list[str]:
    """Close what runs for this cluster but is no longer wanted (a worker host removed from the
    file, worker_on_scheduler turned off, ...): retired through the scheduler first (its data
    moves to the workers that stay), then stopped. Returns `name@host` of each."""
    wanted = {(p.host.name, p.name) for p in cluster.wanted()}
    sched = cluster.wanted()[0]
    settings = cluster.settings()
    hosts = {h.name: h for h in [*cluster.hosts(), *extra_hosts]}
    going = []
    for host, names in running_names(cluster, list(hosts.values())).items():
        for name in names:
            if (host.name, name) in wanted:
                continue
            if name == "scheduler":
                going.append(RemoteProcess(host, "scheduler", host, settings))
            elif name.startswith(f"{host.name}-w") and name.rsplit("-w", 1)[1].isdigit():
                going.append(RemoteProcess(host, "worker", sched.host, settings,
                                           index=int(name.rsplit("-w", 1)[1])))
    if not going:
        return []
    workers = [p.name for p in going if p.kind == "worker"]
    progress("closing what is no longer wanted: "
             + ", ".join(f"{p.name}@{p.host.name}" for p in going))
    retire(cluster, workers, progress)
    per_process(going, lambda p: p.stop(cluster.ssh()), "stopping unwanted processes")
    return [f"{p.name}@{p.host.name}" for p in going]


def retire(cluster: Cluster, names: list[str], progress=print) -> None:
    """Retire workers through the scheduler (their data moves to the others) when it runs."""
    sched = cluster.wanted()[0]
    if not names or process_states(cluster).get(sched, ProcStatus("dead")).state != "running":
        return
    try:
        cluster.client().retire_workers(names=names, close_workers=True, remove=True)
    except Exception as e:  # noqa: BLE001 - retiring moves data; stopping must go on
        progress(f"WARNING: could not retire {', '.join(names)} first ({e}); stopping them")


def _drop_unreachable(cluster: Cluster, procs: list[RemoteProcess],
                      current: dict[RemoteProcess, ProcStatus], degraded_ok: bool,
                      progress) -> list[RemoteProcess]:
    """Refuse an unreachable scheduler host; skip unreachable worker hosts when min_workers (or,
    for scale, any live worker) allows a degraded cluster, naming them."""
    sched = procs[0]
    if current[sched].state == "unreachable":
        raise ClusterStartError(f"start: cannot reach the scheduler host {sched.host.name} "
                                f"({sched.host.address}) over SSH; check it is up and run "
                                "`daskfleet up` again.")
    lost = [p for p in procs[1:] if current[p].state == "unreachable"]
    if not lost:
        return procs
    names = ", ".join(sorted({p.host.name for p in lost}))
    can_run = len(procs) - 1 - len(lost)
    floor = cluster.spec.min_workers or (1 if degraded_ok else None)
    if floor is None or can_run < floor:
        allowed = "" if floor is None else f" ({can_run} workers could start, at least {floor} needed)"
        raise ClusterStartError(f"start: cannot reach {names} over SSH{allowed}; check the "
                                "hosts are up and run `daskfleet up` again.")
    progress(f"WARNING: starting degraded without {names} (unreachable): its workers are "
             f"missing; running {can_run} workers (at least {floor} needed)")
    return [p for p in procs if p not in lost]


def _share(limit: str | None) -> float | None:
    """A worker's memory limit as a fraction of its host ("auto" alone on a host is all of it);
    None for a limit in bytes, set in the cluster file."""
    if limit == "auto":
        return 1.0
    try:
        return float(limit)
    except (TypeError, ValueError):
        return None


def _env_stale(p: RemoteProcess, now: ProcStatus, env_hashes: dict[str, str]) -> bool:
    """Running from another environment than this machine's lock gives its host."""
    return (now.state == "running" and p.host.name in env_hashes
            and now.env != env_hashes[p.host.name])


def _over_memory(p: RemoteProcess, now: ProcStatus) -> bool:
    """A running worker whose memory limit is larger than its share now that more workers share
    its host (together they would commit more than the host has), or another limit than the
    cluster file now sets. A smaller share than due is left alone: restarting it would cost its
    data for no safety."""
    if p.kind != "worker" or now.state != "running" or now.memory_limit is None:
        return False
    running, wanted = _share(now.memory_limit), _share(p.memory_limit)
    if running is None or wanted is None:
        return now.memory_limit != p.memory_limit
    return running > wanted + 1e-4


def reconcile(cluster: Cluster, env_hashes: dict[str, str] | None = None, progress=print,
              extra_hosts: list[Host] = (), degraded_ok: bool = False) -> list[str]:
    """Close what runs and is not wanted, start what is wanted and not running (or runs stale),
    leave the rest alone, then wait until every wanted worker has joined. Returns what started.

    Worker hosts that cannot be reached are skipped when `min_workers` (or degraded_ok) still
    allows it, reported; otherwise this fails naming them."""
    ssh = cluster.ssh()
    close_unwanted(cluster, list(extra_hosts), progress)
    current = process_states(cluster)
    procs = _drop_unreachable(cluster, cluster.wanted(), current, degraded_ok, progress)
    sched = procs[0]
    stale = [p for p in procs if _env_stale(p, current[p], env_hashes or {})]
    # Restarted last, once the workers that start now have joined: their data moves there.
    over = [p for p in procs if p not in stale and _over_memory(p, current[p])]
    if any(current[p].state != "running" for p in procs) or stale:
        from runner.cluster import preflight

        hosts = sorted({p.host for p in procs}, key=lambda h: h.name)
        workers = sorted({p.host for p in procs[1:]}, key=lambda h: h.name)
        checks = preflight.run(hosts, workers, sched.host, cluster.spec.dask.scheduler_port, ssh)
        progress(f"pre-flight: SSH to {len(hosts)} host(s) ok; scheduler port reachable from "
                 f"{len(checks) - len(hosts)} worker host(s)")
    if stale:
        progress(f"restarting {len(stale)} process(es) on this machine's environment: "
                 + ", ".join(f"{p.name}@{p.host.name}" for p in stale))
        for group in ([p for p in stale if p.kind == "worker"],
                      [p for p in stale if p.kind == "scheduler"]):
            per_process(group, lambda p: p.stop(ssh), "stopping")
    needed = [p for p in procs if current[p].state != "running" or p in stale]
    pids = {p.name: current[p].pid for p in procs if p not in needed}
    started: list[str] = []
    try:
        missing = [p for p in needed if p.kind == "worker"]

        def start_workers() -> None:
            progress(f"starting {len(missing)} worker(s): "
                     + ", ".join(f"{p.name}@{p.host.name}" for p in missing))
            by_proc = per_process(missing, lambda p: p.start(ssh), "starting workers")
            for p in missing:
                pids[p.name] = by_proc[p]
                started.append(f"{p.name}@{p.host.name}")

        if sched in needed:
            progress(f"starting scheduler on {sched.host.name} ({sched.scheduler_address})")
            pids[sched.name] = sched.start(ssh)
            started.append(f"{sched.name}@{sched.host.name}")
            # The workers start while the scheduler imports, so the two startups overlap; each
            # nanny's preload (cluster/nanny_wait.py) holds it until the scheduler listens (TLS
            # keeps it off any other process on that port).
            if missing:
                start_workers()
            readiness.wait_port(cluster, sched, pids[sched.name])
        else:
            readiness.wait_port(cluster, sched, None)
            if missing:
                start_workers()
        state.update(cluster.state_dir, pids=pids, scheduler=sched.scheduler_address,
                     dashboard=f"http://{sched.host.dask_address}:"
                               f"{cluster.spec.dask.dashboard_port}")
        readiness.wait_ready(cluster, {p.name for p in procs[1:]})
        if over:
            progress(f"restarting {len(over)} worker(s) with their host's new memory share: "
                     + ", ".join(f"{p.name}@{p.host.name} ({current[p].memory_limit} -> "
                                 f"{p.memory_limit})" for p in over))
            retire(cluster, [p.name for p in over], progress)
            per_process(over, lambda p: p.stop(ssh), "stopping")
            by_proc = per_process(over, lambda p: p.start(ssh), "restarting workers")
            for p in over:
                pids[p.name] = by_proc[p]
                started.append(f"{p.name}@{p.host.name}")
            state.update(cluster.state_dir, pids=pids)
            readiness.wait_ready(cluster, {p.name for p in procs[1:]})
    except BaseException as e:
        # Whatever went wrong (Ctrl-C included), what this run started is stopped again.
        if started:
            progress(f"start failed; stopping what this run started: {', '.join(started)}")
            for p in procs:
                if f"{p.name}@{p.host.name}" in started:
                    try:
                        p.stop(ssh)
                    except Exception:  # noqa: BLE001 - best effort, the original error wins
                        pass
        if not isinstance(e, DaskfleetError):
            raise
        collect_logs(cluster, procs)
        raise ClusterStartError(f"{e}\nAll logs copied to {cluster.state_dir / 'logs'}.") from e
    return started


def collect_logs(cluster: Cluster, procs: list[RemoteProcess]) -> None:
    dest = cluster.state_dir / "logs"
    dest.mkdir(parents=True, exist_ok=True)
    for p in procs:
        try:
            with connect(p.host, cluster.ssh()) as c:
                text = c.run(f"cat {p.log_file}").stdout
            (dest / f"{p.host.name}-{p.name}.log").write_text(text)
        except Exception:  # noqa: BLE001 - an unreachable host has no log to copy
            pass
