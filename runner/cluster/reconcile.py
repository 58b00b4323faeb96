"""The reconciler, in the spirit of distributed's SpecCluster: list what runs for the cluster, close
running minus wanted, open wanted minus running, wait on the set of names, roll back on any error.

A running process counts as wanted only if it runs this machine's environment and the memory
limit its host's worker count gives it; otherwise it is restarted. Listing what runs and closing
what is not wanted are in runner.cluster.running.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runner import state
from runner.cluster import changes, memory_claims, readiness, running
from runner.cluster.hosts import Host
from runner.cluster.process_settings import ProcStatus
from runner.cluster.processes import RemoteProcess
from runner.cluster.ssh import connect
from runner.errors import ClusterStartError, DaskfleetError
from runner.log import Progress, Say

if TYPE_CHECKING:
    from runner.cluster.cluster import Cluster

logger = logging.getLogger(__name__)


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
    running.close_unwanted(cluster, list(extra_hosts), progress)
    current = running.process_states(cluster)
    procs = _drop_unreachable(cluster, cluster.wanted(), current, degraded_ok, progress)
    sched = procs[0]
    todo = changes.plan(procs, current, env_hashes or {})
    _claim_memory(cluster, procs, todo, progress)  # before anything stops or starts
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
            running.per_process(group, lambda p: p.stop(ssh, previous="save"), "stopping")
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
            running.per_process(stale, lambda p: p.stop(ssh, previous="save"), "stopping")
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
            by_proc = running.per_process(missing, lambda p: p.start(ssh), "starting workers")
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
    running.per_process(replaced, lambda p: p.forget_previous(ssh), "forgetting the replaced units")
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
            running.retire(cluster, [p], progress, scheduler_running=True)
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
