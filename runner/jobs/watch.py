"""What happened to the cluster while a run ran, for its record, and what a fault means.

`RunWatch` snapshots the workers when the run starts; at the end it asks the scheduler for the
workers then, its `remove-worker` / `add-worker` events and the nannies' memory kills since the
start, and distributed's task stream (which keys ran more than once: the work recomputed after a
worker was lost). `explain` turns the error of a run that failed because of the cluster (the
scheduler lost, tasks that killed every worker they ran on) into one paragraph that names the
scheduler or the memory limit and says what to do.

Every question to the scheduler is bounded (`QUERY_TIMEOUT_S`) and none is asked of a scheduler
the client has lost: recording a run never waits on a dead machine.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from runner.errors import BatchError, DaskfleetError, ModelTooLarge

if TYPE_CHECKING:
    from distributed import Client

QUERY_TIMEOUT_S = 10.0
SCHEDULER_PROBE_TIMEOUT_S = 3.0
MAX_KEYS = 20  # recomputed keys listed in the record (all are counted)


def _gib(n: float | None) -> str:
    return "?" if not n else f"{n / 2**30:.2f} GiB"


def recomputed(stream: list[dict]) -> dict[str, int]:
    """Task keys that finished more than once in a task stream, with how many times."""
    runs = Counter(str(r.get("key")) for r in stream if r.get("status", "OK") == "OK")
    return {k: n for k, n in sorted(runs.items()) if n > 1}


def killed_worker(error: BaseException | None) -> BaseException | None:
    """The KilledWorker (a task that took down every worker it ran on) behind ``error``."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ == "KilledWorker" or "KilledWorker" in str(error):
            return error
        error = error.__cause__ or error.__context__
    return None


class RunWatch:
    def __init__(self, client: Client, cluster_file: str, scheduler_host: str,
                 n_features: int | None = None, job_path: str | None = None):
        self.client = client
        self.cluster_file = cluster_file
        self.scheduler_host = scheduler_host
        self.n_features = n_features
        self.job_path = job_path
        self.address = client.scheduler.address
        self.t0 = time.time()
        self.at_start: dict[str, dict] = {}
        self.start_error: str | None = None

    # -- the scheduler, asked with a bound ----------------------------------------------------
    def _ask(self, method: str, **kwargs) -> Any:
        rpc = getattr(self.client.scheduler, method)
        return self.client.sync(rpc, callback_timeout=QUERY_TIMEOUT_S, **kwargs)

    def scheduler_answers(self) -> bool:
        """The client still holds its scheduler, and the scheduler's port takes connections."""
        if self.client.status != "running":
            return False
        hostport = self.address.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)),
                                          timeout=SCHEDULER_PROBE_TIMEOUT_S):
                return True
        except (OSError, ValueError):
            return False

    def _workers(self) -> dict[str, dict]:
        info = self._ask("identity", n_workers=-1)
        return {a: {"name": str(w.get("name")), "host": w.get("host"),
                    "memory_limit": w.get("memory_limit")} for a, w in info["workers"].items()}

    def start(self) -> None:
        """Never raises: a run whose start could not be observed has a shorter record."""
        self.t0 = time.time()
        try:
            self.at_start = self._workers()
            # the first call registers the scheduler's task-stream plugin: it records from now
            self._ask("get_task_stream", start=self.t0)
        except Exception as e:  # noqa: BLE001 - the run itself decides whether the cluster is fine
            self.start_error = f"{type(e).__name__}: {e}"

    def _events(self, topic: str) -> list[dict]:
        """The scheduler's events on ``topic`` since the start, each with its time as ``at``."""
        return [{**msg, "at": t} for t, msg in self._ask("events", topic=topic)
                if t >= self.t0 and isinstance(msg, dict)]

    def _name(self, address: str, *more: dict[str, dict]) -> str:
        for workers in (self.at_start, *more):
            if address in workers:
                return workers[address]["name"]
        return address

    # -- the record ---------------------------------------------------------------------------
    def summary(self) -> dict:
        """For status.json and metrics.json (`cluster_events`). Never raises."""
        record: dict[str, Any] = {
            "scheduler": f"{self.address} ({self.scheduler_host})",
            "started": round(self.t0, 3),
            "workers_at_start": sorted(w["name"] for w in self.at_start.values()),
        }
        if self.start_error:
            record["start_error"] = f"could not ask the scheduler at the start: {self.start_error}"
        if not self.scheduler_answers():
            record["scheduler_lost"] = True
            return record
        # each question on its own: one that fails (or times out) leaves the others' answers
        errors: list[str] = []

        def ask(what: str, fn, default):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - the record says what it could not learn
                errors.append(f"{what}: {type(e).__name__}: {e}")
                return default

        at_end = ask("workers", self._workers, None)
        # each worker's own topic, not "all": that one holds everything since the scheduler
        # started (functions run on it included, which may not travel back) and can be large
        removed = [{**m, "worker": address}
                   for address in sorted(set(self.at_start) | set(at_end or {}))
                   for m in ask(f"events of {address}", lambda a=address: self._events(a), [])
                   if m.get("action") == "remove-worker"]
        stream = ask("task stream", lambda: self._ask("get_task_stream", start=self.t0), [])
        memory_kills = ask("memory kills", lambda: self._events("worker-restart-memory"), [])
        if errors:
            record["error"] = "could not ask the scheduler: " + "; ".join(errors)
        if at_end is None:
            return record
        again = recomputed(stream)
        start_names = set(record["workers_at_start"])
        end_names = {w["name"] for w in at_end.values()}
        record.update(
            workers_at_end=sorted(end_names),
            lost_workers=sorted({self._name(m["worker"], at_end) for m in removed}
                                | (start_names - end_names)),
            joined_workers=sorted(at_end[a]["name"] for a in set(at_end) - set(self.at_start)),
            worker_removals=[{"worker": self._name(m["worker"], at_end),
                              "lost_computed_tasks": len(m.get("lost-computed-tasks") or ()),
                              "processing_tasks": len(m.get("processing-tasks") or ()),
                              "expected": bool(m.get("expected")),
                              "at": round(m["at"], 3),
                              "seconds_into_run": round(m["at"] - self.t0, 1)}
                             for m in removed],
            recomputed_tasks=len(again),
            recomputed_keys=list(again)[:MAX_KEYS],
            tasks_run=len(stream),
        )
        if memory_kills:
            record["memory_kills"] = [{"worker": self._name(m.get("worker", "?"), at_end),
                                       "rss": m.get("rss")} for m in memory_kills]
        return record

    # -- the error ----------------------------------------------------------------------------
    def explain(self, error: BaseException) -> DaskfleetError | None:
        """A clearer error for a run the cluster failed, or None to keep the run's own."""
        if isinstance(error, KeyboardInterrupt):
            return None
        if isinstance(error, ModelTooLarge):  # refused up front: the same advice, with the files
            return ModelTooLarge(self._too_large_message(error), need=error.need,
                                 limit=error.limit, fits=error.fits)
        cause = str(error).split("\n")[0][:300]
        if not self.scheduler_answers():
            return BatchError(
                f"the scheduler {self.address} on host {self.scheduler_host} was lost during the "
                f"job ({cause}); the run is recorded as failed. `daskfleet status -c "
                f"{self.cluster_file}` shows what is down; once the host is back (on the lab: "
                f"`daskfleet lab restart {self.scheduler_host}`), `daskfleet up -c "
                f"{self.cluster_file}` starts the scheduler and workers again; then submit the "
                "job again.")
        if killed_worker(error) is not None:
            return BatchError(self._memory_message(cause))
        return None

    def _too_large_message(self, error: ModelTooLarge) -> str:
        job = f" in {self.job_path}" if self.job_path else ""
        fits = f"{error.fits:,} fits" if error.fits else "none fits: fewer classes"
        return (f"{error.need}, more than the workers can hold: their memory limit is "
                f"{_gib(error.limit)} (dask.memory_limit in {self.cluster_file}). Lower "
                f"features.n_features{job} ({fits}), or raise dask.memory_limit (hosts with more "
                "memory), then submit again; nothing was trained.")

    def _memory_message(self, cause: str) -> str:
        limits = [w["memory_limit"] for w in self.at_start.values() if w.get("memory_limit")]
        try:
            kills = self._events("worker-restart-memory")
        except Exception:  # noqa: BLE001 - the message is still right without the count
            kills = []
        seen = (f"{len(kills)} time(s) a worker's memory went past 95% of its limit and its "
                f"nanny restarted it (largest {_gib(max(k.get('rss') or 0 for k in kills))}); "
                if kills else "")
        per_class = ""
        if self.n_features:
            from runner.batch.train import WEIGHT_BYTES

            per_class = (f" The model holds features.n_features x classes weights, several "
                         f"copies while it trains: {self.n_features:,} x {WEIGHT_BYTES} bytes = "
                         f"{self.n_features * WEIGHT_BYTES / 2**20:.0f} MiB per class and copy.")
        job = f" in {self.job_path}" if self.job_path else ""
        return (
            f"the job's tasks killed every worker they ran on ({cause}). {seen}The workers' "
            f"memory limit is {_gib(min(limits) if limits else None)} (dask.memory_limit in "
            f"{self.cluster_file}).{per_class} Lower features.n_features{job} (e.g. 262144), or "
            "raise dask.memory_limit (hosts with more memory), then submit again; "
            f"`daskfleet logs -c {self.cluster_file}` shows each worker's end.")
