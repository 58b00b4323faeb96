"""Control side: the task plumbing of the pipeline's phases. Wait for a phase's tasks and turn
a failed one into a BatchError naming its shard (with dask's progress bar in a terminal),
release finished futures, place partitions on workers (``_Parts``), and reduce futures in a
tree on the workers.

The functions submitted here are the worker side's (runner.batch.parts, train, ...); this
module itself never runs on the nodes.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from distributed import Future, wait
from distributed.client import FuturesCancelledError

from runner.batch import parts, train
from runner.dask_workers import joined_workers
from runner.errors import BatchError

if TYPE_CHECKING:
    from distributed import Client


def progress_bar_wanted() -> bool:
    """dask's text progress bar only in a terminal; logs and pipes get the phase lines alone."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _draw_progress_bar(futures: Sequence[Future]) -> None:
    """dask's TextProgressBar on stderr until ``futures`` are done (it writes to stdout, which
    would mix with the command's output)."""
    from distributed.diagnostics.progressbar import TextProgressBar

    with contextlib.redirect_stdout(sys.stderr):
        try:
            TextProgressBar(list(futures), width=30)
        except Exception:  # noqa: BLE001 - the bar is cosmetic; the wait below decides
            pass


def _check(futures: Sequence[Future], phase: str, paths: Sequence[str] | None = None,
           bar: bool = False) -> None:
    """Wait for ``futures``; the first failed task becomes a BatchError naming phase and shard.
    With ``bar``, in a terminal, dask's progress bar shows while they run."""
    if bar and progress_bar_wanted():
        _draw_progress_bar(futures)
    try:
        wait(list(futures))
    except FuturesCancelledError as e:  # a worker or the scheduler dropped the tasks
        raise BatchError(f"{phase} failed: the cluster cancelled its tasks ({e}); check "
                         "`daskfleet status` and the worker logs") from e
    for i, f in enumerate(futures):
        if f.status == "error":
            exc = f.exception()
            where = f" on shard {paths[i]}" if paths is not None and i < len(paths) else ""
            hint = ("; a shard is read only on the hosts it was shipped to (data.copies), and "
                    "they had no worker: bring them back (`daskfleet up`) or raise data.copies"
                    if type(exc).__name__ == "NoValidWorkerError" else "")
            raise BatchError(
                f"{phase} failed{where}: {type(exc).__name__}: {exc}{hint}"
            ) from exc
        if f.status != "finished":
            raise BatchError(f"{phase} failed: task {f.key} ended as {f.status!r}")


def _release(futures: Sequence[Future]) -> None:
    # release, not cancel: cancelling would also cancel the finished tasks' dependents
    for f in futures:
        f.release()


def owners(workers: Sequence[str], n: int,
           holders: Sequence[Sequence[str]] | None = None) -> list[str]:
    """The worker each of ``n`` partitions belongs to (where it is cleaned, trained and scored).
    Without ``holders``: partition i to worker i mod W (``workers`` in address order). With them
    (per partition, the hosts holding its shard): to the worker, on one of those hosts, with the
    fewest partitions so far (ties: the order of ``workers`` from i mod W), so no partition
    leaves its host; one none of whose hosts has a worker here goes to i mod W (it is then
    fetched from a host that holds it, or its read fails naming the shard)."""
    if not workers:
        raise BatchError("the cluster has no workers any more; check `daskfleet status` and "
                         "the worker logs")
    if holders is None:
        return [workers[i % len(workers)] for i in range(n)]
    from distributed.comm import get_address_host

    host = {w: get_address_host(w) for w in workers}
    position = {w: j for j, w in enumerate(workers)}  # not workers.index: O(W) a lookup
    count = dict.fromkeys(workers, 0)
    out = []
    for i in range(n):
        on = set(holders[i])
        candidates = [w for w in workers if host[w] in on] or [workers[i % len(workers)]]
        w = min(candidates, key=lambda w: (count[w], (position[w] - i) % len(workers)))
        count[w] += 1
        out.append(w)
    return out


def spread(workers: Sequence[str]) -> list[str]:
    """``workers`` reordered so the first k span as many hosts as they can (each host's first
    worker, then each one's second...): the first k is the subset that mixing's fewer groups use,
    and spread over hosts it holds more of the shards in place."""
    from distributed.comm import get_address_host

    rank: dict[str, int] = {}
    order = []
    for w in sorted(workers):
        host = get_address_host(w)
        order.append((rank.get(host, 0), w))
        rank[host] = rank.get(host, 0) + 1
    return [w for _, w in sorted(order)]


class _Parts:
    """The partitions a pass runs over: futures of the cached feature matrices (``vec``), or,
    without the cache, the shard paths, each rebuilt inside the task that uses it
    (``parts.on_shard``, with the idf weights when given). ``holders``: per partition, the hosts
    that hold its shard (None: every worker's host holds every shard); a path is read there only,
    and the groups keep each partition on one of its hosts (``owners``)."""

    def __init__(self, client: Client, vec: Sequence[Future] | None = None,
                 paths: Sequence[str] | None = None, load_params: dict | None = None,
                 idf: Future | None = None, holders: Sequence[Sequence[str]] | None = None):
        self.client, self.vec = client, vec
        self.paths: Sequence[str] = paths if paths is not None else ()
        self.load_params, self.idf, self.holders = load_params, idf, holders

    def __len__(self) -> int:
        return len(self.vec if self.vec is not None else self.paths)

    def submit(self, func: Callable, i: int, *args: Any) -> Future:
        """``func(partition i, *args)`` as a task."""
        if self.vec is not None:
            return self.client.submit(func, self.vec[i], *args, pure=False)
        return self.client.submit(parts.on_shard, func, self.paths[i], self.load_params,
                                  self.idf, *args, pure=False, **on_holders(self.holders, i))

    def map(self, func: Callable, *args: Any) -> list[Future]:
        return [self.submit(func, i, *args) for i in range(len(self))]

    def by_worker(self, max_groups: int | None = None) -> list[tuple[str, list[int]]]:
        """The partitions of each worker (``owners``, workers in address order): where `_run`
        placed each when it loaded it (with the cache), or where its shard is rebuilt (without).
        The same groups either way, so both give the same model, bit for bit. With
        ``max_groups``, that many groups, on workers spread over the hosts (``spread``)."""
        workers = _workers(self.client)
        if max_groups and max_groups < len(workers):
            workers = sorted(spread(workers)[:max_groups])
        mine: dict[str, list[int]] = {w: [] for w in workers}
        for i, w in enumerate(owners(workers, len(self), self.holders)):
            mine[w].append(i)
        return [(w, idx) for w, idx in mine.items() if idx]

    def mixing_groups(self, n_rows: int) -> list[tuple[str, list[int]]]:
        """The groups parameter mixing trains one model on each: one per worker, but no more
        than leave every model ``train.MIN_MODEL_ROWS`` of the ``n_rows`` training rows."""
        return self.by_worker(max_groups=max(1, n_rows // train.MIN_MODEL_ROWS))

    def submit_group(self, func: Callable, worker: str, indices: list[int], *args: Any) -> Future:
        """``func(those partitions, *args)`` as one task on ``worker``, where they are (another
        worker takes it if that one is lost: the partitions are then recomputed, or, without the
        cache, each shard the new host lacks is rebuilt on one that holds it)."""
        where = {"workers": [worker], "allow_other_workers": True, "pure": False}
        if self.vec is not None:
            return self.client.submit(func, [self.vec[i] for i in indices], *args, **where)
        holders = None if self.holders is None else [list(self.holders[i]) for i in indices]
        return self.client.submit(parts.on_shards, func, [self.paths[i] for i in indices],
                                  self.load_params, self.idf, *args, holders=holders, **where)

    def futures(self) -> list[Future]:
        """What this holds on the cluster (to release at the end)."""
        return list(self.vec) if self.vec is not None else []


def on_holders(holders: Sequence[Sequence[str]] | None, i: int) -> dict[str, Any]:
    """The restriction of a task that reads shard i from its path: its hosts only, strictly (a
    loose one would let an idle worker elsewhere steal the read, and fail it; with its hosts all
    gone, the scheduler's no-workers-timeout fails it, and `_check` says what to do)."""
    return {} if holders is None else {"workers": list(holders[i])}


def _workers(client: Client) -> list[str]:
    return sorted(joined_workers(client))


def _tree_reduce(client: Client, futures: Sequence[Future], func: Callable,
                 fan_in: int = 8, root: Callable | None = None,
                 root_args: Sequence = ()) -> tuple[Future, list[Future]]:
    """``func(*inputs)`` in a tree over the futures, on the workers (no input waits for all the
    others, and no node holds more than ``fan_in`` of them). The last node is
    ``root(*root_args, *inputs)`` (``func`` by default), so a reduction that ends in another
    step ends in the same task. Returns the root and every node."""
    level, nodes = list(futures), []
    while len(level) > fan_in:
        level = [client.submit(func, *level[i:i + fan_in], pure=False)
                 for i in range(0, len(level), fan_in)]
        nodes += level
    # one input still goes through a node, so the root always has the reduction's shape
    top = client.submit(root or func, *root_args, *level, pure=False)
    return top, [*nodes, top]
