"""Finishing a training run early, keeping its model (`daskfleet runs finish RUN`): a flag in
the scheduler's metadata, under the run's id, which the driver reads after each epoch of SGD
training. Set, the driver releases the epochs it had submitted ahead, keeps the model of the
last epoch that completed, evaluates and saves it as usual; the metrics say how many epochs
it trained. Other model kinds (naive Bayes: one pass; incremental) run to their end."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

FINISH_KEY = "daskfleet-finish"


def request(client: Client, run_id: str) -> None:
    client.set_metadata([FINISH_KEY, run_id], True)


def requested(client: Client, run_id: str) -> bool:
    return bool(client.get_metadata([FINISH_KEY, run_id], default=False))


def clear(client: Client, run_id: str) -> None:
    """Forget the run's flag (its run ended), so the scheduler's metadata does not grow with
    every run finished early. A lambda: cloudpickle sends it by value, so the scheduler needs
    no copy of this module."""
    import contextlib

    with contextlib.suppress(Exception):  # a scheduler gone has nothing left to clear
        client.run_on_scheduler(
            lambda dask_scheduler, key=FINISH_KEY, run=run_id:
            dask_scheduler.task_metadata.get(key, {}).pop(run, None))


def checker(client: Client, run_id: str | None) -> Callable[[], bool] | None:
    """What the training loop asks after each epoch (None: no run id, nothing can ask)."""
    if not run_id:
        return None
    return lambda: requested(client, run_id)
