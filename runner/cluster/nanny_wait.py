"""Nanny preload (imported on the nodes): wait until the scheduler listens, polling every 50 ms.

daskfleet starts the workers while the scheduler imports (cluster/reconcile.py), so their
imports overlap. A nanny that finds no scheduler yet would retry through distributed's
``connect``, whose pauses double from 10 ms with full jitter: one that began 2 s early sleeps up
to another 1-2 s after the scheduler listens, and only then registers and spawns its worker.
This runs before the nanny registers (``--preload-nanny``) and returns as soon as a TLS (or TCP)
connection to the scheduler succeeds, or after ``WAIT_S``, when the nanny's own retries take over
(and report).

With ``distributed.worker.multiprocessing-method: forkserver`` (the dask_node role's default) it
first starts the server the worker will be forked from, so that the server's import of distributed
overlaps the wait instead of following it (a spawned worker imports it after the wait).
"""

from __future__ import annotations

import asyncio
import time

POLL_S = 0.05
WAIT_S = 120.0
ATTEMPT_S = 0.5  # one connect try; a scheduler not listening refuses at once


# What the fork server imports: what a spawned worker imports before it joins. distributed's own
# list adds numpy and pandas, imported in the nanny first to check them: on a host that starts
# several processes at once, CPU spent before the scheduler listens. Not the tasks' modules
# (cluster/worker_imports.py, each worker's --preload): the fork server stays for as long as
# its worker, and holding them would take it from 57 to 207 MB resident, per worker.
FORKSERVER_PRELOAD = ["distributed"]


def start_forkserver() -> bool:
    """Start the nanny's fork server now if workers are forked from one; whether it was."""
    import multiprocessing
    import multiprocessing.forkserver

    import dask
    import distributed.utils

    if dask.config.get("distributed.worker.multiprocessing-method") != "forkserver":
        return False
    multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
    # distributed.utils.get_mp_context sets its own list once, unless told it was set (private,
    # so checked: an upgrade that renames it only brings back distributed's list)
    if hasattr(distributed.utils, "_forkserver_preload_set"):
        distributed.utils._forkserver_preload_set = True
    multiprocessing.forkserver.ensure_running()  # returns once started, not once imported
    return True


async def dask_setup(nanny) -> None:
    from distributed.comm import connect

    start_forkserver()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            comm = await connect(nanny.scheduler.addr, timeout=ATTEMPT_S,
                                 **nanny.connection_args)
        except OSError:
            await asyncio.sleep(POLL_S)
            continue
        await comm.close()
        return
