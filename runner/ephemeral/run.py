"""`daskfleet submit JOB -c EPHEMERAL.yaml`: make the cluster, run the job as on any cluster (same
run folder, report and version check), remove the cluster whatever happens.

Ctrl-C is a KeyboardInterrupt; SIGTERM is turned into one (`Terminated`) so the same `finally`
closes the cluster. Only SIGKILL (or a dead machine) skips it: then every instance powers itself
off at the run's expiry (max_lifetime; shutdown behaviour terminate), the scheduler's idle timeout
may end it sooner, and `daskfleet gc` removes the rest (group, subnet, VPC) after the expiry.

The job's outcome is the command's: a teardown that fails after a job that succeeded leaves the
run `succeeded` (and the exit code 0); the failure is printed after the result, with what to run,
and kept in the run's status.json under `teardown`. What can still bill after such a failure is
an instance, and it stops itself at the expiry; the rest (group, subnet, VPC) costs nothing.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from runner.config import ClusterSpec
from runner.ephemeral import tags as T
from runner.errors import DaskfleetError
from runner.log import Progress, Say
from runner.signals import sigterm_raises

logger = logging.getLogger(__name__)


def submit_ephemeral(spec: ClusterSpec, job_path: Path, runs_dir: Path,
                     progress: Progress | None = None):
    from runner.batch import load_job
    from runner.batch.artifacts import write_failed_run
    from runner.ephemeral.aws import file_environment
    from runner.ephemeral.cluster import EphemeralCluster
    from runner.jobs import runs
    from runner.jobs.submit import new_run_id, submit

    job = load_job(job_path)  # a bad job file makes nothing
    run_id = new_run_id(job.name)
    runs_dir = Path(runs_dir).resolve()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    lines: list[str] = []  # what the run said before its job: the head of its run.log
    say = Say(progress, logger, record=lines.append)

    t0 = time.monotonic()
    with sigterm_raises(), file_environment(spec.environment):
        cluster = EphemeralCluster(spec, run_id, say)
        try:
            with cluster:
                t = time.monotonic()
                result = submit(cluster, Path(job_path), runs_dir, progress=say, run_id=run_id)
                cluster.timings["job"] = time.monotonic() - t
        except DaskfleetError as e:
            run_dir = runs_dir / run_id
            if not run_dir.exists():  # the cluster never got to the job: record the run anyway
                write_failed_run(run_dir, {"run_id": run_id, "job": job.name, "cluster": spec.name,
                                           "started_at": started_at, "run_dir": str(run_dir),
                                           "duration_s": round(time.monotonic() - t0, 3)}, e, lines)
                runs.record_run_dir(runs_dir, run_dir)
            _record_teardown(run_dir, cluster, spec, say)
            raise
        except BaseException:  # Ctrl-C: the run folder, if any, says cancelled; add the teardown
            _record_teardown(runs_dir / run_id, cluster, spec, say)
            raise
    _record_teardown(result.run_dir, cluster, spec, say)
    tm = cluster.timings
    say("ephemeral: timings " + " ".join(f"{k}={tm[k]:.1f}s" for k in
        ("create", "ready", "job", "teardown") if k in tm))
    return result


def _record_teardown(run_dir: Path, cluster, spec: ClusterSpec, say: Say) -> None:
    """Add the teardown's outcome (and how the workers were bought) to the run's status.json,
    beside the job's status, which it never changes; print a failure with what to run."""
    from runner.batch.artifacts import STATUS_FILE, write_json_atomic

    status_path = Path(run_dir) / STATUS_FILE
    if status_path.is_file():
        status = json.loads(status_path.read_text())
        status["teardown"] = cluster.teardown_record()
        if cluster.e.spot_workers:
            status["workers_market"] = cluster.workers_market()
        write_json_atomic(status_path, status)
    if cluster.teardown_error:
        source = spec.source or f"<the file of cluster {spec.name}>"
        say.warning(f"ephemeral: TEARDOWN FAILED for run {cluster.run_id} (the job's outcome above "
                    f"stands): {cluster.teardown_error}. Its instances power themselves off at "
                    f"{cluster.tags[T.EXPIRES]}; after that, `daskfleet gc -c {source}` removes "
                    "what is left (or remove the resources tagged daskfleet:run="
                    f"{cluster.run_id} yourself now).")
