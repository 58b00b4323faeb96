"""`daskfleet submit`: prepare the job's corpus, ship it to the workers, run it, keep the run."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from runner.cluster import Cluster
from runner.ship import remote_dir, ship


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


def submit(cluster: Cluster, job_path: Path, runs_dir: Path, progress=print) -> SubmitResult:
    from runner.batch import load_job, prepare_dataset, run_job

    job = load_job(job_path)  # validate before touching the cluster
    client = cluster.client()
    cluster.check_versions()
    progress("versions match on client, scheduler and workers")
    t = time.monotonic()
    dataset = prepare_dataset(job, datasets_cache())
    progress(f"dataset {dataset.digest[:12]}: {dataset.rows} documents in {len(dataset.files)} "
             f"shards ({time.monotonic() - t:.1f}s)")
    workers = [h for h in cluster.hosts() if h.role == "worker"]
    if cluster.spec.provider == "lab" and cluster.spec.lab.worker_on_scheduler:
        workers = cluster.hosts()
    t = time.monotonic()
    sent = ship(dataset.dir, dataset.digest, workers, cluster.ssh())
    progress(f"dataset shipped to {sum(sent.values())} host(s), already on "
             f"{len(sent) - sum(sent.values())} ({time.monotonic() - t:.1f}s)")
    shard_paths = [f"{remote_dir(dataset.digest)}/{f}" for f in dataset.files]
    run_id = new_run_id(job.name)
    run_dir = runs_dir.resolve() / run_id
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    context = {"run_id": run_id, "job": str(job_path), "cluster": cluster.spec.name,
               "lock_hash": cluster.status_record().get("lock_hash"),
               "scheduler": client.scheduler.address, "dataset": dataset.digest}
    metrics = run_job(client, job, shard_paths, run_dir, context=context, progress=progress)
    return SubmitResult(run_id, run_dir, metrics)
