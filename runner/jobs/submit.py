"""`daskfleet submit`: prepare the job's corpus, ship it to the workers, run it, keep the run."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from runner.batch.artifacts import write_failed_run
from runner.cluster import Cluster, activity
from runner.errors import ClusterStartError, DaskfleetError
from runner.jobs import runs
from runner.jobs.ship import remote_dir, ship
from runner.jobs.watch import RunWatch
from runner.log import Progress, Say
from runner.signals import sigterm_raises

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitResult:
    run_id: str
    run_dir: Path
    metrics: dict


def datasets_cache() -> Path:
    base = os.environ.get("DASKFLEET_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "daskfleet" / "datasets"


def new_run_id(job_name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{job_name}-{secrets.token_hex(2)}"


def with_cluster_results(job, spec):
    """The job with the cluster file's ``results`` when its own file names none (the job's
    wins): a team's runs all land in its store without each job file saying so."""
    results = getattr(spec, "results", None)
    if job.results is None and results is not None:
        return job.model_copy(update={"results": results})
    return job


def ship_over_ssh(cluster: Cluster, dataset, say: Progress, job) -> list[list[str]] | None:
    """The dataset to the live workers' hosts over SSH (a long-lived cluster), each shard to
    ``data.copies`` of them. Returns, per shard, the Dask addresses of the hosts that hold it, or None when
    every one of them holds every shard."""
    workers = cluster.live_worker_hosts(say)
    t = time.monotonic()
    copies = job.data.copies
    shipped = ship(dataset.dir, dataset.digest, dataset.files, workers, cluster.ssh(),
                   cluster.spec.name, copies)
    say(f"dataset shipped: {shipped.summary()} ({time.monotonic() - t:.1f}s)")
    return shipped.dask_holders()


def _scheduler_host(cluster) -> str:
    hosts = getattr(cluster, "hosts", None)
    if hosts is None:  # an ephemeral cluster
        return "the scheduler's host"
    try:
        return next(h.name for h in hosts() if h.role == "scheduler")
    except Exception:  # noqa: BLE001 - an ephemeral cluster, or no record: say it generally
        return "the scheduler's host"


def _client(cluster):
    """The cluster's client; a scheduler that does not answer is an error naming it."""
    try:
        return cluster.client()
    except (OSError, TimeoutError) as e:
        source = cluster.spec.source
        raise ClusterStartError(
            f"cluster {cluster.spec.name}: the scheduler on {_scheduler_host(cluster)} does not "
            f"answer ({type(e).__name__}: {e}); `daskfleet status -c {source}` shows what is "
            f"down and `daskfleet up -c {source}` starts it again.") from e


def submit(cluster: Cluster, job_path: Path, runs_dir: Path, progress: Progress | None = None,
           run_id: str | None = None) -> SubmitResult:
    """Run the job and keep the run (see `_submit`). SIGTERM is raised as a KeyboardInterrupt
    (`Terminated`) while it runs, so an interrupted run is recorded as cancelled, as Ctrl-C's."""
    with sigterm_raises():
        return _submit(cluster, job_path, runs_dir, progress, run_id)


def _submit(cluster: Cluster, job_path: Path, runs_dir: Path, progress: Progress | None = None,
            run_id: str | None = None) -> SubmitResult:
    """Run the job and keep the run: ``runs_dir/<run-id>/`` and a row in ``runs_dir/index.sqlite``,
    for a failed run as for a successful one (the error is re-raised after it is recorded).

    ``cluster`` is a long-lived Cluster or anything with the same client(), check_versions(),
    status_record() and spec.name (an ephemeral cluster); one with a ``ship_dataset(dataset, say, job)``
    ships the data itself, the others over SSH."""
    from runner.batch import load_job, prepare_dataset, run_job

    job = with_cluster_results(load_job(job_path), cluster.spec)  # before touching the cluster
    run_id = run_id or new_run_id(job.name)
    runs_dir = runs_dir.resolve()
    run_dir = runs_dir / run_id
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []  # what this run said before run_job: the head of its run.log
    say = Say(progress, logger, record=lines.append)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    say(f"run {run_id}: job {job.name} on cluster {cluster.spec.name}")
    try:
        client = _client(cluster)
        cluster.check_versions()
        say("versions match on client, scheduler and workers")
        dataset = None
        shard_hosts: list[list[str]] | None = None  # None: every worker's host has every shard
        if job.data.path_url is None:  # else the workers read it where it lives
            t = time.monotonic()
            dataset = prepare_dataset(job, datasets_cache())
            say(f"dataset {dataset.digest[:12]}: {dataset.rows} documents in "
                f"{len(dataset.files)} shards ({time.monotonic() - t:.1f}s)")
            for note in dataset.notes:
                say.warning(f"warning: {note}")
            ship_dataset = getattr(cluster, "ship_dataset", None)
            if ship_dataset is not None:
                shard_hosts = ship_dataset(dataset, say, job)
            else:
                shard_hosts = ship_over_ssh(cluster, dataset, say, job)
    except (DaskfleetError, KeyboardInterrupt) as e:
        write_failed_run(run_dir, {"run_id": run_id, "job": job.name, "started_at": started_at,
                                   "run_dir": str(run_dir),
                                   "duration_s": round(time.monotonic() - t0, 3)}, e, lines)
        runs.record_run_dir(runs_dir, run_dir)
        raise
    shard_paths = [] if dataset is None else \
        [f"{remote_dir(dataset.digest, None if ship_dataset else cluster.spec.name)}/{f}"
         for f in dataset.files]
    context = {"run_id": run_id, "job": str(job_path), "job_path": str(Path(job_path).resolve()),
               "cluster": cluster.spec.name,
               "lock_hash": cluster.status_record().get("lock_hash"),
               "scheduler": client.scheduler.address}
    if dataset is None:
        context["data"] = job.data.path_url
    else:
        context.update(dataset=dataset.digest, dataset_rows=dataset.rows,
                       skipped_files=list(dataset.skipped))
    watch = RunWatch(client, str(getattr(cluster.spec, "source", None) or cluster.spec.name),
                     _scheduler_host(cluster), n_features=job.features.n_features,
                     job_path=str(job_path))
    try:
        activity.register(client, run_id)  # `up` will not restart the scheduler under it
        watch.start()
        metrics = run_job(client, job, shard_paths, run_dir, context=context, progress=progress,
                          log_lines=lines, watch=watch, shard_hosts=shard_hosts)
    except KeyboardInterrupt:
        Say(progress, logger)(f"run {run_id} cancelled; recorded in {run_dir}")
        raise
    finally:
        if run_dir.is_dir():
            runs.record_run_dir(runs_dir, run_dir)
        with contextlib.suppress(Exception):  # a lost scheduler has nothing left to clear
            activity.register(client, None)
    lost = metrics.get("cluster_events", {}).get("lost_workers")
    if lost:
        Say(progress, logger)(f"workers lost during the run: {', '.join(lost)}; "
                              f"{metrics['cluster_events'].get('recomputed_tasks', 0)} task(s) "
                              "recomputed")
    return SubmitResult(run_id, run_dir, metrics)
