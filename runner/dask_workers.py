"""The workers joined to a scheduler, asked of the scheduler itself.

``Client.scheduler_info(n_workers=-1)`` is not that: it refreshes the client's cached identity
and then returns the cache, which the client's own periodic poll (every
``distributed.client.scheduler-info-interval``, 2 s, asking for no per-worker detail) may have
replaced in between. Its ``"workers"`` is then empty though every worker is up: with the poll at
1 ms, a loop of calls sees no worker within seconds (``tests/batch/test_joined_workers.py``).
That race gave the intermittent "no partition had training rows": the training was grouped
over an empty worker list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client


def joined_workers(client: Client) -> dict[str, dict[str, Any]]:
    """Address -> the scheduler's record of each worker (name, host, nthreads, memory_limit...),
    fresh from the scheduler, never from the client's cache. A client that lost its scheduler
    (and gave up reconnecting) is a ClusterStartError naming the address, not an AttributeError."""
    from runner.errors import ClusterStartError

    if client.scheduler is None or client.status in ("closed", "closing"):
        raise ClusterStartError(
            "the Dask client lost its connection to the scheduler and gave up reconnecting; "
            "run the command again (`daskfleet status` shows whether the scheduler is up)")
    return dict(client.sync(client.scheduler.identity, n_workers=-1)["workers"])
