"""Which jobs are running on a cluster, as its scheduler sees them: each `submit` registers its
run id in the scheduler's metadata under its client's id, and a run counts while that client is
connected (a killed submit leaves a registration, not a running job). Other connected clients
that hold tasks (a notebook, a script) are counted too."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

RUNS_KEY = "daskfleet-runs"


def register(client: Client, run_id: str | None) -> None:
    """Record (or, with None, clear) the run this client drives."""
    client.set_metadata([RUNS_KEY, client.id], run_id)


def _clients(dask_scheduler) -> dict[str, int]:  # runs on the scheduler
    return {cid: len(cs.wants_what) for cid, cs in dask_scheduler.clients.items()
            if cid != "fire-and-forget"}


def running(client: Client) -> list[str]:
    """The runs (and other clients holding tasks) on the scheduler, this client left out."""
    import sys

    import cloudpickle

    # by value: this module is control-side code, which the nodes' environment may not hold
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    runs = client.get_metadata([RUNS_KEY], default=None) or {}
    connected = client.run_on_scheduler(_clients)
    busy = []
    for cid, tasks in sorted(connected.items()):
        if cid == client.id:
            continue
        if runs.get(cid):
            busy.append(f"run {runs[cid]}")
        elif tasks:
            busy.append(f"client {cid} holding {tasks} task(s)")
    return busy
