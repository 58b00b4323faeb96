"""The reconciler, in the spirit of distributed's SpecCluster: list what runs for the cluster, close
running minus wanted, open wanted minus running, wait on the set of names, roll back on any error.

A running process counts as wanted only if it runs this machine's environment and the memory
limit its host's worker count gives it; otherwise it is restarted.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from runner import state
from runner.cluster import changes, memory_claims, readiness
from runner.cluster.hosts import Host
from runner.cluster.processes import RUN_DIR, SUPERVISE_DIR, ProcStatus, RemoteProcess
from runner.cluster.ssh import connect, fan_out, fan_out_items
from runner.errors import ClusterStartError, DaskfleetError, HostError
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
    """What runs for this cluster on each reachable host, by its pid files (named after the
    cluster), and what the host's supervisor keeps running (its scripts: a process it is about
    to start again after a reboot has no pid file yet): host -> process names. Unreachable
    hosts are left out."""
    prefix = shlex.quote(f"{cluster.spec.name}-")
    own = shlex.quote(f"{RUN_DIR}/{cluster.spec.name}")
    # the cluster's pid folder, the pid files of a daskfleet before per-cluster users, and
    # the supervisor's scripts
    # (the names in the cluster's own folder carry no prefix: they are marked "own:")
    cmd = (f"{{ cd {own} 2>/dev/null && ls -1 -- *.pid | sed 's/^/own:/'; "
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
    """Every process the cluster's pid files on ``hosts`` record, wanted or not (a worker of a
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
    retire(cluster, [p.name for p in procs if p.kind == "worker"], progress)
    per_process(procs, lambda p: p.stop(cluster.ssh()), what)
    return [f"{p.name}@{p.host.name}" for p in procs]


def retire(cluster: Cluster, names: list[str], progress: Progress | None = None,
           scheduler_running: bool | None = None) -> None:
    """Retire workers through the scheduler (their data moves to the others) when it runs
    (``scheduler_running``: known already; otherwise asked over SSH)."""
    say = Say(progress, logger)
    if not names:
        return
    if scheduler_running is None:
        sched = cluster.wanted()[0]
        scheduler_running = process_states(cluster).get(sched, ProcStatus("dead")).state \
            == "running"
    if not scheduler_running:
        return
    try:
        cluster.client().retire_workers(names=names, close_workers=True, remove=True)
    except Exception as e:  # noqa: BLE001 - retiring moves data; stopping must go on
        say.warning(f"WARNING: could not retire {', '.join(names)} first ({e}); stopping them")


def _drop_unreachable(cluster: Cluster, procs: list[RemoteProcess],
                      current: dict[RemoteProcess, ProcStatus], degraded_ok: bool,
                      progress: Progress | None) -> list[RemoteProcess]:
    """Refuse an unreachable scheduler host; skip unreachable worker hosts when min_workers (or,
    for scale, any live worker) allows a degraded cluster, naming them."""
    say = Say(progress, logger)
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
    say.warning(f"WARNING: starting degraded without {names} (unreachable): its workers are "
                f"missing; running {can_run} workers (at least {floor} needed)")
    return [p for p in procs if p not in lost]


def reconcile(cluster: Cluster, env_hashes: dict[str, str] | None = None,
              progress: Progress | None = None,
              extra_hosts: Sequence[Host] = (), degraded_ok: bool = False,
              restart_scheduler: bool = False) -> list[str]:
    """Close what runs and is not wanted, start what is wanted and not running, replace what
    runs but differs (``changes.plan``: environment, settings, node files, memory share), leave
    the rest alone, then wait until every wanted worker has joined. Returns what started.

    Workers are replaced one at a time (retired, so their data moves; stopped; started; joined),
    so a job running through it completes. A scheduler that must restart is refused while a job
    runs on it unless ``restart_scheduler``. Worker hosts that cannot be reached are skipped
    when `min_workers` (or degraded_ok) still allows it, reported; otherwise this fails naming
    them."""
    say = Say(progress, logger)
    ssh = cluster.ssh()
    close_unwanted(cluster, list(extra_hosts), progress)
    current = process_states(cluster)
    procs = _drop_unreachable(cluster, cluster.wanted(), current, degraded_ok, progress)
    sched = procs[0]
    todo = changes.plan(procs, current, env_hashes or {})
    _claim_memory(cluster, procs, todo, progress)  # before anything stops or starts
    # running since before their node had a supervisor (a cluster made by an older daskfleet):
    # handed to it as they are, not restarted
    touched = {c.proc for c in todo}
    unsupervised = [p for p in procs if p not in touched and current[p].state == "running"
                    and current[p].supervised is False]
    if unsupervised:
        say("handing to the nodes' supervisors: "
            + ", ".join(f"{p.name}@{p.host.name}" for p in unsupervised))
        per_process(unsupervised, lambda p: p.supervise(ssh), "handing to the supervisor")
    restarts = [c for c in todo if c.action == "restart"]
    sched_change = next((c for c in todo if c.proc is sched), None)
    if restarts:
        say("to replace, and why:\n" + changes.table(restarts))
    if sched_change is not None and sched_change.action == "restart":
        if not _may_restart_scheduler(cluster, sched_change, restart_scheduler, progress):
            todo.remove(sched_change)  # it keeps valid files until a later `up` without a job
            sched_change = None
    if todo:
        from runner.cluster import preflight

        hosts = sorted({p.host for p in procs}, key=lambda h: h.name)
        workers = sorted({p.host for p in procs[1:]}, key=lambda h: h.name)
        checks = preflight.run(hosts, workers, sched.host, cluster.spec.dask.scheduler_port, ssh)
        say(f"pre-flight: SSH to {len(hosts)} host(s) ok; scheduler port reachable from "
            f"{len(checks) - len(hosts)} worker host(s)")
    if sched_change is not None and sched_change.action == "restart":
        # A new scheduler ends every worker's connection and data: they all restart with it.
        going = [p for p in procs[1:] if current[p].state == "running"] + [sched]
        say("stopping the scheduler and its workers to restart them: "
            + ", ".join(f"{p.name}@{p.host.name}" for p in going))
        cluster.close_client()  # before its scheduler goes: no reconnect attempts to report
        for group in (going[:-1], going[-1:]):
            # each one's script kept aside: if the new ones fail, these start again as they were
            per_process(group, lambda p: p.stop(ssh, previous="save"), "stopping")
        replaced = going
        needed = list(procs)
        rolling: list[changes.Change] = []
    elif sched_change is not None:
        # the scheduler starts anew (it was not running): workers that differ cannot be retired
        # through it, and may not even reach it (another port): they restart with it
        stale = [c.proc for c in restarts if c.proc.kind == "worker"]
        if stale:
            say("stopping workers to restart them with the new scheduler: "
                + ", ".join(f"{p.name}@{p.host.name}" for p in stale))
            per_process(stale, lambda p: p.stop(ssh, previous="save"), "stopping")
        replaced = stale
        needed = [c.proc for c in todo if c.action == "start"] + stale
        rolling = []
    else:
        replaced = []
        needed = [c.proc for c in todo if c.action == "start"]
        rolling = [c for c in restarts if c.proc.kind == "worker"]
    before = state.read(cluster.state_dir).get("scheduler")
    pids = {p.name: current[p].pid for p in procs if p not in needed}
    started: list[str] = []
    try:
        missing = [p for p in needed if p.kind == "worker"]

        def start_workers() -> None:
            say(f"starting {len(missing)} worker(s): "
                + ", ".join(f"{p.name}@{p.host.name}" for p in missing))
            by_proc = per_process(missing, lambda p: p.start(ssh), "starting workers")
            for p in missing:
                pids[p.name] = by_proc[p]
                started.append(f"{p.name}@{p.host.name}")

        if sched in needed:
            # a client (or tunnel) of an earlier scheduler, maybe on another port, is of no use
            cluster.close_client()
            state.update(cluster.state_dir, scheduler=sched.scheduler_address)
            say(f"starting scheduler on {sched.host.name} ({sched.scheduler_address})")
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
    except BaseException as e:
        # Whatever went wrong (Ctrl-C included), what this run started is stopped again, and
        # what it stopped to replace is started again as it was.
        if started:
            say(f"start failed; stopping what this run started: {', '.join(started)}")
            for p in procs:
                if f"{p.name}@{p.host.name}" in started:
                    try:
                        p.stop(ssh, previous="keep")
                    except Exception:  # noqa: BLE001 - best effort, the original error wins
                        pass
        back = _put_back(cluster, replaced, before, progress)
        # hosts where no worker of this cluster runs now: its memory claim there goes too
        idle = sorted({p.host for p in procs if p.kind == "worker"}
                      - {p.host for p in procs if p.kind == "worker" and p not in needed
                         and current[p].state == "running"}, key=lambda h: h.name)
        try:
            memory_claims.release(cluster.spec.name, idle, ssh)
        except Exception:  # noqa: BLE001 - best effort, the original error wins
            pass
        if not isinstance(e, DaskfleetError):
            raise
        collect_logs(cluster, procs)
        raise ClusterStartError(f"{e}\n{back}All logs copied to {cluster.state_dir / 'logs'}."
                                ) from e
    per_process(replaced, lambda p: p.forget_previous(ssh), "forgetting the replaced scripts")
    started += _roll(cluster, procs, rolling, pids, progress)
    return started


def _put_back(cluster: Cluster, replaced: list[RemoteProcess], scheduler: str | None,
              progress: Progress | None) -> str:
    """Start again, as they were, the processes a failed replacement stopped (their scripts
    kept aside by stop(previous="save")); the record points at the old scheduler again. Returns
    what to tell the user ("" when nothing was replaced)."""
    if not replaced:
        return ""
    say = Say(progress, logger)
    ssh = cluster.ssh()
    back, failed = [], []
    # the scheduler first, then the workers that join it
    for p in sorted(replaced, key=lambda p: p.kind != "scheduler"):
        try:
            if p.restore(ssh) is not None:
                back.append(f"{p.name}@{p.host.name}")
        except Exception as e:  # noqa: BLE001 - each one is said; the original error wins
            failed.append(f"{p.name}@{p.host.name} ({e})")
    if scheduler is not None:
        state.update(cluster.state_dir, scheduler=scheduler)
    line = ((f"The processes it replaced run again as they were: {', '.join(back)}. "
             if back else "") +
            (f"Could not start again: {'; '.join(failed)}. " if failed else ""))
    say(line.strip())
    return line


def _claim_memory(cluster: Cluster, procs: list[RemoteProcess], todo: list[changes.Change],
                  progress: Progress | None) -> None:
    """Record the cluster's memory claim on each host it runs workers on; refused where workers
    would start on a host whose clusters would then commit more than its memory."""
    d = cluster.spec.dask
    per_host = {p.host: p.per_host for p in procs if p.kind == "worker"}
    claims = {h: memory_claims.claim(d.memory_limit, d.memory_share, n)
              for h, n in per_host.items()}
    strict = {c.proc.host for c in todo if c.proc.kind == "worker"}
    memory_claims.commit(cluster.spec.name, claims, strict, cluster.ssh(), progress)


def _may_restart_scheduler(cluster: Cluster, change: changes.Change, force: bool,
                           progress: Progress | None) -> bool:
    """Whether the scheduler may restart now: yes with no job running (or with --restart);
    a change of its node files alone (new certificates of the same CA) waits for a later `up`;
    anything else is refused while a job runs."""
    say = Say(progress, logger)
    from runner.cluster import activity

    try:
        busy = activity.running(cluster.client())
    except (OSError, TimeoutError) as e:  # a scheduler that does not answer runs no job
        say(f"the scheduler does not answer ({e}): no job can be running on it")
        busy = []
    except Exception as e:  # noqa: BLE001 - never restart it under a job we could not see
        if force:
            busy = ["(unknown: the question failed)"]
        else:
            raise ClusterStartError(
                f"the scheduler on {change.proc.host.name} must restart "
                f"({'; '.join(change.reasons)}), but asking it whether a job runs failed "
                f"({type(e).__name__}: {e}); nothing was restarted. Run `daskfleet up --restart "
                f"-c {cluster.spec.source}` to restart it anyway.") from e
    if not busy:
        return True
    if force:
        say.warning(f"WARNING: restarting the scheduler under {', '.join(busy)} (--restart): "
                    "it will fail")
        return True
    if change.files_only:
        say(f"the scheduler keeps its running files while {', '.join(busy)} runs: they "
            "stay valid; `daskfleet up` restarts it once no job runs (`status` shows it "
            "pending)")
        return False
    raise ClusterStartError(
        f"the scheduler on {change.proc.host.name} must restart ({'; '.join(change.reasons)}), "
        f"but {', '.join(busy)} is running on it: a restart would end it. No process was "
        "restarted (the nodes' files are up to date; running processes keep what they started "
        "with). "
        f"Wait until it ends (`daskfleet runs`), or run `daskfleet up --restart -c "
        f"{cluster.spec.source}` to restart the scheduler anyway.")


def _roll(cluster: Cluster, procs: list[RemoteProcess], rolling: list[changes.Change],
          pids: dict[str, int | None], progress: Progress | None) -> list[str]:
    """Replace workers one at a time: retire (its data moves to the others), stop, start, wait
    until it and every other wanted worker have joined. A failure stops the roll there, with
    the workers not yet reached still running as they were."""
    say = Say(progress, logger)
    ssh = cluster.ssh()
    names = {p.name for p in procs[1:]}
    replaced: list[str] = []
    for i, c in enumerate(rolling, 1):
        p = c.proc
        say(f"replacing {c.where} ({i}/{len(rolling)}): {'; '.join(c.reasons)}")
        stopped = False
        try:
            # the scheduler was just proven ready: no SSH status sweep of every process per step
            retire(cluster, [p.name], progress, scheduler_running=True)
            p.stop(ssh, previous="save")
            stopped = True
            pids[p.name] = p.start(ssh)
            state.update(cluster.state_dir, pids=pids)
            readiness.wait_ready(cluster, names)
        except BaseException as e:  # Ctrl-C included: the old one comes back all the same
            left = [x.where for x in rolling[i:]]
            collect_logs(cluster, [p])
            back = ""
            if stopped:  # the new one goes, the old one comes back
                try:
                    p.stop(ssh, previous="keep")
                except Exception:  # noqa: BLE001 - best effort, the original error wins
                    pass
                back = _put_back(cluster, [p], None, progress)
            if not isinstance(e, DaskfleetError):
                raise
            raise ClusterStartError(
                f"replacing {c.where} failed: {e}\n{back}" + (
                    f"Not reached, still running as before: {', '.join(left)}. " if left else "")
                + f"Replaced before it: {', '.join(replaced) or 'none'}. Logs copied to "
                f"{cluster.state_dir / 'logs'}; fix the cause and run `daskfleet up` again.") from e
        p.forget_previous(ssh)
        replaced.append(c.where)
    return replaced


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
