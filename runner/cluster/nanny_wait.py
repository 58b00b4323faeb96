"""Nanny preload (imported on the nodes): wait until the scheduler listens, polling every 50 ms.

daskfleet starts the workers while the scheduler imports (cluster/reconcile.py), so their
imports overlap. A nanny that finds no scheduler yet would retry through distributed's
``connect``, whose pauses double from 10 ms with full jitter: one that began 2 s early sleeps up
to another 1-2 s after the scheduler listens, and only then registers and spawns its worker.
This runs before the nanny registers (``--preload-nanny``) and returns as soon as a TLS (or TCP)
connection to the scheduler succeeds, or after ``WAIT_S``, when the nanny's own retries take over
(and report).
"""

from __future__ import annotations

import asyncio
import time

POLL_S = 0.05
WAIT_S = 120.0
ATTEMPT_S = 0.5  # one connect try; a scheduler not listening refuses at once


async def dask_setup(nanny) -> None:
    from distributed.comm import connect

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
