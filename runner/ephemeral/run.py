"""`daskfleet submit JOB -c EPHEMERAL.yaml`: make the cluster, run the job as on any cluster (same
run folder, report and version check), remove the cluster whatever happens.

Ctrl-C is a KeyboardInterrupt; SIGTERM is turned into one (`Terminated`) so the same `finally`
closes the cluster. Only SIGKILL (or a dead machine) skips it: then the tags' expiry and
`daskfleet gc` are the safety net, and the scheduler's idle timeout shuts its instances down.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from runner.config import ClusterSpec
from runner.errors import DaskfleetError
from runner.signals import sigterm_raises


def submit_ephemeral(spec: ClusterSpec, job_path: Path, runs_dir: Path, progress=print):
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
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        progress(line)

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
            raise
    tm = cluster.timings
    say("ephemeral: timings " + " ".join(f"{k}={tm[k]:.1f}s" for k in
                                         ("create", "ready", "job", "teardown") if k in tm))
    return result
