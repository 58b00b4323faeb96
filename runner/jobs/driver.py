"""A detached run's driver, on the scheduler's host (`daskfleet submit --detach`).

It runs as the cluster's `dask` user, in the cluster's environment, with the submitting
checkout's own runner package (``runner.zip``, first on its path), in its own session (setsid),
so it outlives the SSH session that started it and any control machine. Its folder,
``RUNS_ROOT/<cluster>/<run id>/``, holds what the control machine sent (``request.json``,
``job.yaml``) and what it makes: ``state.json`` (queued or running, its pid), ``driver.log``
(its output) and ``result/``, the run folder `run_job` writes (model, metrics, report, logs),
failed and cancelled runs included. The control machine fetches ``result/`` when it is there.

Runs of one cluster queue: a driver starts its run once fewer than the cluster's
``max_running_jobs`` runs queued before it (by the host's clock) are still unfinished.

`python -m runner.jobs.driver FOLDER` (node side: imports the batch, never the SSH side).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from runner.batch.artifacts import write_json_atomic

logger = logging.getLogger("runner.jobs.driver")  # not __main__ under python -m

RUNS_ROOT = "/var/lib/daskfleet/runs"
REQUEST, STATE, RESULT, LOG, SECRETS = ("request.json", "state.json", "result", "driver.log",
                                        "secrets.json")
CODE = "runner.zip"  # the submitting checkout's runner package, on the driver's PYTHONPATH
MODULE = "runner.jobs.driver"
QUEUE_POLL_S = 1.0


def run_folder(cluster: str, run_id: str) -> str:
    return f"{RUNS_ROOT}/{cluster}/{run_id}"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def driver_alive(folder: Path) -> bool:
    """Is the driver that state.json names running (the pid is a driver of this very folder)?"""
    state = _read_json(folder / STATE) or {}
    pid = state.get("pid")
    if not pid:
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [w.decode(errors="replace") for w in cmd]
    return MODULE in words and str(folder) in words


def finished(folder: Path) -> bool:
    return (folder / RESULT / "status.json").is_file()


def ahead_of(folder: Path) -> list[str]:
    """The unfinished runs of this cluster queued before this one, whose driver is alive."""
    mine = _read_json(folder / STATE) or {}
    key = (mine.get("queued_at", 0.0), folder.name)
    ahead = []
    for other in folder.parent.iterdir():
        if other == folder or not other.is_dir() or finished(other):
            continue
        state = _read_json(other / STATE) or {}
        mark = (state.get("queued_at", 0.0), other.name)
        if mark < key and driver_alive(other):
            ahead.append(mark)
    return [name for _, name in sorted(ahead)]


def describe(folder: Path) -> dict:
    """What the control machine asks (`--status`): the run's status, its pid, the runs ahead."""
    result = _read_json(folder / RESULT / "status.json")
    if result is not None:
        return {"status": result.get("status", "failed"), "final": True}
    state = _read_json(folder / STATE)
    if not (folder / REQUEST).is_file():
        return {"status": "unknown", "final": False}
    if state is None or not driver_alive(folder):
        # no state yet: started a moment ago; a state without its driver: the driver died
        # (the host rebooted, the process was killed) before it recorded an end
        alive = state is None and time.time() - (folder / REQUEST).stat().st_mtime < 30
        return {"status": "starting" if alive else "lost", "final": not alive}
    out = {"status": state["status"], "final": False, "pid": state["pid"]}
    if state["status"] == "queued":
        out["ahead"] = ahead_of(folder)
    return out


def cancel(folder: Path, grace_s: float = 30.0) -> str:
    """Stop the run's driver (SIGTERM to its session: it records the run cancelled), SIGKILL
    after ``grace_s``. Returns what happened."""
    import signal

    if finished(folder):
        return "finished"
    if not driver_alive(folder):
        return "not running"
    state = _read_json(folder / STATE)
    if state is None:  # its folder went away since: nothing left to stop
        return "not running"
    pid = int(state["pid"])
    os.killpg(pid, signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline:
        if not driver_alive(folder):
            return "cancelled"
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return "killed"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--status", "--cancel", "--pid"):
        folder = Path(args[1]).resolve()
        if args[0] == "--status":
            print(json.dumps(describe(folder)))
        elif args[0] == "--cancel":
            print(cancel(folder))
        else:
            state = _read_json(folder / STATE) or {}
            print(state.get("pid", "") if driver_alive(folder) else "")
        return 0
    folder = Path(args[0]).resolve()
    request = json.loads((folder / REQUEST).read_text())
    # the submitting shell's AWS variables (an object-store corpus): read, then removed from disk
    secrets = _read_json(folder / SECRETS) or {}
    (folder / SECRETS).unlink(missing_ok=True)
    os.environ.update(secrets.get("env") or {})
    state = {"status": "queued", "pid": os.getpid(), "queued_at": time.time()}
    write_json_atomic(folder / STATE, state)

    from runner.log import cli_output
    from runner.signals import sigterm_raises

    # its stdout is the run's driver.log (`daskfleet runs logs`): the progress lines as they are
    with cli_output(logging.INFO, prefix=""), sigterm_raises():
        return _drive(folder, request, state, secrets.get("results_storage_options"))


def _drive(folder: Path, request: dict, state: dict, results_options: dict | None = None) -> int:
    from runner.batch.artifacts import write_failed_run
    from runner.log import Say

    run_id = request["run_id"]
    lines: list[str] = []  # the head of the run's run.log
    say = Say(None, logger, record=lines.append)

    client = None
    started = time.time()
    try:
        reported = None
        while True:
            ahead = ahead_of(folder)
            if len(ahead) < int(request.get("max_running", 1)):
                break
            if ahead != reported:
                say(f"queued behind {', '.join(ahead)}")
                reported = ahead
            time.sleep(QUEUE_POLL_S)
        write_json_atomic(folder / STATE, {**state, "status": "running", "running_at": time.time()})
        say(f"run {run_id}: driver on {os.uname().nodename} (pid {os.getpid()})")

        from distributed import Client

        from runner.batch.job import load_job
        from runner.batch.pipeline import run_job
        from runner.cluster import activity
        from runner.jobs.watch import RunWatch

        job = load_job(folder / "job.yaml", check_paths=False)
        if request.get("results"):  # the job file's own, or the cluster file's (submit chose)
            from runner.batch.job import ResultsSpec

            job = job.model_copy(update={"results": ResultsSpec(
                path=request["results"]["path"],
                storage_options=results_options or None)})
        client = Client(request["scheduler"], timeout="30s")  # TLS: the node's DASK_CONFIG
        activity.register(client, run_id)
        watch = RunWatch(client, request["cluster_source"], request["scheduler_host"],
                         n_features=job.features.n_features, job_path=request["context"]["job"])
        watch.start()
        context = {**request["context"], "job_path": str(folder / "job.yaml"), "detached": True}
        run_job(client, job, request["shard_paths"], folder / RESULT, context=context,
                shard_hosts=request.get("shard_hosts"),
                progress=say, log_lines=lines, watch=watch)
        return 0
    except BaseException as e:  # noqa: BLE001 - every end is recorded, then reported
        traceback.print_exc()
        if finished(folder):  # run_job recorded it; the traceback goes beside its log
            logs = folder / RESULT / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            (logs / "traceback.txt").write_text(traceback.format_exc())
        else:
            write_failed_run(folder / RESULT, {
                "run_id": run_id, "job": request.get("job"), "run_dir": str(folder / RESULT),
                "started_at": request["context"].get("submitted_at"),
                "duration_s": round(time.time() - started, 3),
                "traceback": traceback.format_exc()}, e, lines)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    finally:
        if client is not None:
            try:
                from runner.cluster import activity

                activity.register(client, None)
                client.close()
            except Exception:  # noqa: BLE001 - a lost scheduler has nothing left to clear
                pass


if __name__ == "__main__":
    sys.exit(main())
