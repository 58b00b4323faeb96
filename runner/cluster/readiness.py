"""Waiting for a cluster to be ready: one poll-until loop, used for the scheduler's port and for
the set of workers that must join. Both stop early, with logs, when what they wait for died."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from runner.cluster.processes import RemoteProcess
from runner.dask_workers import joined_workers
from runner.errors import ClusterStartError

if TYPE_CHECKING:
    from runner.cluster.cluster import Cluster

POLL_CAP_S = 0.25  # readiness polls are cheap: a late poll costs more than one more
ALIVE_EVERY_S = 1.0  # liveness checks go over SSH: at most once a second


def poll_until(ready: Callable[[], bool], timeout: float, *, alive: Callable[[], None],
               timed_out: Callable[[], Exception]) -> None:
    """Call ready() with a backoff (50 ms doubling up to POLL_CAP_S) until it is true. Once a
    second call alive(), which raises when what we wait for can no longer come (a process died);
    past the timeout raise timed_out()."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    next_alive = time.monotonic() + ALIVE_EVERY_S
    while not ready():
        now = time.monotonic()
        if now > next_alive:
            alive()
            next_alive = now + ALIVE_EVERY_S
        if now > deadline:
            raise timed_out()
        time.sleep(delay)
        delay = min(delay * 2, POLL_CAP_S)


def answering_pid(cluster: Cluster) -> int | None:
    """The pid of the scheduler that answers on our address (another process may hold the port:
    a scheduler of another cluster, a stale one)."""
    import cloudpickle

    from runner.cluster import nodeinfo

    cloudpickle.register_pickle_by_value(nodeinfo)
    try:
        return cluster.client().run_on_scheduler(nodeinfo.describe)["pid"]
    except (OSError, TimeoutError):
        return None


def scheduler_port_open(cluster: Cluster, sched: RemoteProcess) -> bool:
    """A TCP connect to the scheduler's port, by the route the client takes."""
    if cluster.provider.tunnel:
        return cluster.scheduler_forward().probe(timeout=2)
    try:
        with socket.create_connection((sched.host.dask_address,
                                       cluster.spec.dask.scheduler_port), timeout=2):
            return True
    except OSError:
        return False


def wait_port(cluster: Cluster, sched: RemoteProcess, pid: int | None = None) -> None:
    """Until the scheduler's port answers (and, for one we just started, that it is our process
    that answers); stop early, with its log, if the process died."""
    timeout = cluster.spec.dask.start_timeout

    def ready() -> bool:
        try:
            return scheduler_port_open(cluster, sched) and (
                pid is None or answering_pid(cluster) == pid)
        except OSError:
            return False

    def failure(why: str) -> ClusterStartError:
        return ClusterStartError(
            f"{sched.host.name}: the scheduler {why} (port {cluster.spec.dask.scheduler_port}). "
            f"Last lines of {sched.log_file}:\n{sched.log_tail(cluster.ssh())}")

    def alive() -> None:
        if sched.status(cluster.ssh()).state == "dead":
            raise failure("exited")

    poll_until(ready, timeout, alive=alive,
               timed_out=lambda: failure(f"does not accept connections after {timeout:.0f}s"))


def wait_ready(cluster: Cluster, wanted: set[str], timeout: float | None = None) -> None:
    """Until every wanted worker (by name) has joined, in the scheduler's own view."""
    timeout = timeout or cluster.spec.dask.start_timeout
    client = cluster.client()
    joined: set[str] = set()

    def ready() -> bool:
        nonlocal joined
        info = joined_workers(client).values()
        joined = wanted.intersection(w.get("name") for w in info)
        return joined == wanted

    def missing() -> list[RemoteProcess]:
        return [p for p in cluster.wanted()[1:] if p.name in wanted - joined]

    def tails(procs: list[RemoteProcess]) -> str:
        return "\n".join(f"--- {p.host.name}: {p.log_file}\n{p.log_tail(cluster.ssh())}"
                         for p in procs)

    def alive() -> None:  # a worker that died will never join
        dead = [p for p in missing() if p.status(cluster.ssh()).state == "dead"]
        if dead:
            raise ClusterStartError(
                "worker(s) exited before joining the scheduler: "
                f"{', '.join(f'{p.name} on {p.host.name}' for p in dead)}.\n{tails(dead)}")

    def timed_out() -> ClusterStartError:
        gone = missing()
        return ClusterStartError(
            f"only {len(joined)} of {len(wanted)} workers joined the scheduler within "
            f"{timeout:.0f}s; missing: {', '.join(p.name for p in gone)}.\n{tails(gone)}")

    poll_until(ready, timeout, alive=alive, timed_out=timed_out)
