"""Control side: run a job's batch on a Dask cluster and write the run folder.

Phases: load -> clean -> vectorize -> train -> evaluate -> save. Every per-row step runs on the
workers as a task per shard (``client.map``), each phase waits for its tasks so that it can be
timed, and the vectorized partitions stay on the workers (futures) for all epochs and for the
evaluation. With ``features.cache: false`` nothing per partition is kept between passes: every
task of every epoch and of the evaluation re-reads, cleans and hashes its shard, so the workers'
memory stays flat as the corpus grows (at the price of a re-read per pass). The client only
ever holds small things: row and label counts, confusion matrices, and at the end the model's
weights.

This module is the run folder around a run (its files, a failure's record, the results'
publication); the phases are in ``pipeline_phases``, the fitting in ``pipeline_fit``, and the
task plumbing they share in ``pipeline_tasks`` (each imports only the ones after it).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed import performance_report

from runner.batch import finish, results
from runner.batch.artifacts import (
    STATUS_FILE,
    SUCCESS_FILES,
    RunLog,
    copy_atomic,
    interruption,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)
from runner.batch.model import save_model
from runner.batch.pipeline_phases import _json_safe, _run
from runner.batch.report import render_report
from runner.errors import BatchError, DaskfleetError
from runner.log import Progress, Say

if TYPE_CHECKING:
    from distributed import Client

    from runner.batch.job import JobSpec

logger = logging.getLogger(__name__)


def run_job(
    client: Client,
    job: JobSpec,
    shard_paths: Sequence[str | Path],
    run_dir: str | Path,
    context: dict | None = None,
    progress: Progress | None = None,
    log_lines: Sequence[str] = (),
    watch: Any = None,
    shard_hosts: Sequence[Sequence[str]] | None = None,
) -> dict:
    """Run ``job`` on the cluster behind ``client`` over the shards at ``shard_paths``.
    ``shard_hosts``: per shard, the hosts (Dask addresses) that hold it, when not every worker's
    host does (``data.copies``); its reads run there only.

    ``shard_paths`` are paths as seen on the worker hosts; the client never opens them. Everything
    is written into ``<run_dir>.tmp``, renamed to ``run_dir`` at the end. A successful run holds
    ``status.json`` ({"status": "succeeded"}), ``model.joblib``, ``metrics.json``,
    ``report.html``, ``performance.html``, ``job.yaml`` (when ``context["job_path"]`` names the
    job file) and ``logs/run.log``; a failed run holds ``status.json`` ({"status": "failed",
    "error": ...}), its logs and performance report, and never a model or metrics. Returns the
    metrics; a failure raises BatchError after the failed run folder is written. ``log_lines``:
    earlier lines of this run (from the control machine), written first into ``logs/run.log``.
    ``watch`` (runner.jobs.watch.RunWatch): its ``summary()`` goes into status.json and
    metrics.json as ``cluster_events``, and its ``explain(error)`` may replace a failure's error.
    An interrupted run (KeyboardInterrupt, SIGTERM raised as one) is recorded as ``cancelled``.
    """
    run_dir = Path(run_dir)
    if run_dir.exists():
        raise BatchError(f"run folder {run_dir} already exists; choose another run id")
    context = dict(context or {})
    tmp = run_dir.with_name(run_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    said = Say(progress, logger)  # the caller's progress, else this module's log
    say = RunLog(tmp / "logs" / "run.log", said, log_lines)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    status = {"run_id": context.get("run_id", run_dir.name), "job": job.name,
              "model": job.model.kind, "started_at": started_at, "run_dir": str(run_dir)}
    try:
        paths = [str(p) for p in shard_paths or ()]
        if not paths and job.data.path_url is None:
            raise BatchError(f"job {job.name!r}: no shards to process (empty corpus)")
        if context.get("job_path"):
            copy_atomic(Path(context["job_path"]), tmp / "job.yaml")
        if job.results is not None:  # before any training: a typo costs seconds, not a run
            results.check(job.results, status)
        with client.as_current(), performance_report(filename=str(tmp / "performance.html")):
            metrics, model = _run(client, job, paths, say, shard_hosts,
                                  finish.checker(client, context.get("run_id")))
        if "finished_early" in metrics:  # its flag has done its work
            finish.clear(client, context["run_id"])
        # input files the control machine left out (data.on_error: skip), from the context
        metrics["skipped_files"] = len(context.get("skipped_files") or ()) \
            + len(metrics.get("skipped_objects") or ())
        metrics["started_at"] = started_at
        metrics["duration_s"] = round(time.perf_counter() - t0, 3)
        if context:
            metrics["context"] = _json_safe(context)
        if watch is not None:
            metrics["cluster_events"] = status["cluster_events"] = _json_safe(watch.summary())
        write_atomic(tmp / "model.joblib", lambda f: save_model(f, model))
        write_json_atomic(tmp / "metrics.json", metrics)
        write_text_atomic(tmp / "report.html", render_report(metrics))
        status.update(status="succeeded", duration_s=metrics["duration_s"],
                      n_workers=metrics["n_workers"], accuracy=metrics["accuracy"],
                      macro_f1=metrics["macro_f1"], error=None)
        write_json_atomic(tmp / STATUS_FILE, status)
        tmp.rename(run_dir)
    except BaseException as e:
        # project errors as they are; the expected failures of I/O and data become a
        # BatchError; anything else (a bug, Ctrl-C) is recorded and propagates unchanged
        error = e if isinstance(e, DaskfleetError) else _as_batch_error(job, e)
        if watch is not None:
            error = watch.explain(e) or error
            status["cluster_events"] = _json_safe(watch.summary())
        _record_failure(tmp, run_dir, status, error or e, say, time.perf_counter() - t0)
        if job.results is not None and run_dir.is_dir() and \
                not str(error or e).startswith("results.path"):
            # the failed run's folder (its logs, its error) goes where the team looks too
            with contextlib.suppress(BatchError):
                results.publish(run_dir, status, job.results, said)
        if error is None or error is e:
            raise
        raise error from e
    finally:
        # the futures of a failed run go out of scope here, and the scheduler forgets them
        shutil.rmtree(tmp, ignore_errors=True)
    if job.results is not None:
        results.publish(run_dir, status, job.results, said)
    return metrics


def _as_batch_error(job: JobSpec, e: BaseException) -> BatchError | None:
    if isinstance(e, (OSError, ValueError, TypeError, RuntimeError, MemoryError)):
        return BatchError(f"job {job.name!r} failed: {type(e).__name__}: {e}")
    return None


def _record_failure(tmp: Path, run_dir: Path, status: dict, error: BaseException, say: RunLog,
                    seconds: float) -> None:
    """Turn the half-written run folder into a failed run: status, logs, and no results."""
    try:
        cancelled = interruption(error)
        message = cancelled or (str(error) if isinstance(error, DaskfleetError) else
                                f"{type(error).__name__}: {error}" if str(error)
                                else type(error).__name__)
        say(message if cancelled else f"failed: {message}")
        for name in SUCCESS_FILES:
            (tmp / name).unlink(missing_ok=True)
        status.update(status="cancelled" if cancelled else "failed", error=message,
                      duration_s=round(seconds, 3))
        write_json_atomic(tmp / STATUS_FILE, status)
        tmp.rename(run_dir)
    except OSError as e:  # recording must not hide the original error
        say(f"could not record the failed run in {run_dir}: {e}")


__all__ = ["run_job"]
