"""Control side of detached runs (`submit --detach`, `runs logs|wait|cancel`): the run's driver
runs on the scheduler's host (runner.jobs.driver), and this machine only starts it, asks it,
and fetches its run folder when it ends. A laptop that sleeps, a dropped VPN or a killed
`daskfleet` ends nothing.

Locally, ``runs/<run id>/status.json`` says where the run lives (``detached``: the cluster file,
the scheduler's host, the folder there) until its run folder is fetched over it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from runner.batch.artifacts import read_status, write_json_atomic
from runner.batch.store_load import ENV_OPTIONS
from runner.cluster.process_settings import (
    DASK_CONFIG,
    ENV_LINK,
    PYCACHE_DIR,
    as_user,
    cluster_user,
    privileged,
)
from runner.cluster.ssh import connect
from runner.errors import BatchError, ClusterStartError
from runner.jobs import runs
from runner.jobs.driver import CODE, LOG, MODULE, REQUEST, RESULT, SECRETS, run_folder
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

FINAL = ("succeeded", "failed", "cancelled", "lost")
# the submitting shell's standard AWS variables, as an attached run hands them to its tasks
AWS_VARIABLES = tuple(dict.fromkeys(var for _, var in ENV_OPTIONS))
START_TIMEOUT_S = 30.0
POLL_S = 2.0


@dataclass(frozen=True)
class Where:
    """Where a detached run lives."""

    cluster_file: str
    cluster: str
    host: str  # the scheduler's host name
    folder: str  # its folder there

    @property
    def user(self) -> str:
        """The cluster's user, whom the driver runs as (its run folders are that user's)."""
        return cluster_user(self.cluster)

    @property
    def python(self) -> str:
        return f"{ENV_LINK.format(cluster=self.cluster)}/bin/python"

    def node(self, flag: str) -> str:
        """Shell: the node side's `--status`, `--cancel` or `--pid` of this run, in the code the
        run was submitted with."""
        return shlex.join(["env", f"PYTHONPATH={self.folder}/{CODE}", self.python, "-m", MODULE,
                           flag, self.folder])


# -- submit ----------------------------------------------------------------------------------
def submit_detached(cluster, job_path: Path, runs_dir: Path,
                    progress: Progress | None = None) -> str:
    """Prepare and ship the data as an attached submit does, send the job to the scheduler's
    host, start its driver there, record the run here as queued; returns the run id."""
    say = Say(progress, logger)
    from runner.batch import load_job, prepare_dataset
    from runner.jobs.ship import remote_dir
    from runner.jobs.submit import datasets_cache, new_run_id, ship_over_ssh, with_cluster_results

    job = with_cluster_results(load_job(job_path), cluster.spec)
    run_id = new_run_id(job.name)
    host = _scheduler(cluster)
    where = Where(str(Path(cluster.spec.source).resolve()), cluster.spec.name, host.name,
                  run_folder(cluster.spec.name, run_id))
    ssh = cluster.ssh()
    cluster.check_versions()  # the workers run the tasks this checkout's driver submits
    shard_paths: list[str] = []
    shard_hosts: list[list[str]] | None = None
    context = {"run_id": run_id, "job": str(job_path), "cluster": cluster.spec.name,
               "lock_hash": cluster.status_record().get("lock_hash"),
               "submitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
               "submitted_from": os.uname().nodename}
    if job.data.path_url is None:
        t = time.monotonic()
        dataset = prepare_dataset(job, datasets_cache())
        say(f"dataset {dataset.digest[:12]}: {dataset.rows} documents in "
            f"{len(dataset.files)} shards ({time.monotonic() - t:.1f}s)")
        shard_hosts = ship_over_ssh(cluster, dataset, say, job)
        shard_paths = [f"{remote_dir(dataset.digest, cluster.spec.name)}/{f}"
                       for f in dataset.files]
        context.update(dataset=dataset.digest, dataset_rows=dataset.rows,
                       skipped_files=list(dataset.skipped))
    else:
        context["data"] = job.data.path_url
    scheduler = cluster.status_record().get("scheduler") or cluster.wanted()[0].scheduler_address
    request = {"run_id": run_id, "job": job.name, "scheduler": scheduler,
               "scheduler_host": host.name, "cluster_source": str(cluster.spec.source),
               "max_running": cluster.spec.max_running_jobs, "shard_paths": shard_paths,
               "shard_hosts": shard_hosts,
               # the cluster file's results, which the job file on the node does not hold (its
               # storage options go with the secrets: they may hold a key)
               "results": None if job.results is None else {"path": job.results.path},
               "context": context}
    files = {REQUEST: json.dumps(request, indent=2).encode(),
             "job.yaml": Path(job_path).read_bytes(), CODE: code_archive()}
    reads_a_store = job.data.path_url is not None or job.results is not None
    env = ({k: os.environ[k] for k in AWS_VARIABLES if os.environ.get(k)}
           if reads_a_store else {})  # else nothing on the nodes would read them
    options = (job.results.storage_options or {}) if job.results is not None else {}
    if env or options:
        # 0600, read and removed by the driver at its start
        files[SECRETS] = json.dumps({"env": env, "results_storage_options": options}).encode()
    _start(host, ssh, where, files)
    local = Path(runs_dir).resolve() / run_id
    local.mkdir(parents=True)
    write_json_atomic(local / "status.json", {
        "run_id": run_id, "job": job.name, "status": "queued", "run_dir": str(local),
        "started_at": context["submitted_at"], "detached": asdict(where)})
    runs.record_run_dir(Path(runs_dir).resolve(), local)
    return run_id


def code_archive() -> bytes:
    """This checkout's runner package as a zip: the driver runs it (on its PYTHONPATH, ahead
    of the environment's copy), so a detached run runs the code it was submitted with, as an
    attached one does, and editing the driver's code reinstalls nothing on the nodes."""
    root = Path(__file__).resolve().parents[1]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(root.rglob("*.py")):
            z.write(path, str(Path("runner") / path.relative_to(root)))
    return buf.getvalue()


def _scheduler(cluster):
    try:
        return next(h for h in cluster.hosts() if h.role == "scheduler")
    except StopIteration:
        raise ClusterStartError(f"cluster {cluster.spec.name}: no scheduler host recorded; run "
                                f"`daskfleet up -c {cluster.spec.source}` first") from None


def _start(host, ssh, where: Where, files: dict[str, bytes]) -> None:
    """Put the files in the run's folder (the dask user's, 0600) and start the driver in its
    own session; wait until it has recorded itself."""
    folder = shlex.quote(where.folder)
    env = {"DASK_CONFIG": DASK_CONFIG.format(cluster=where.cluster),
           "PYTHONPYCACHEPREFIX": PYCACHE_DIR.format(cluster=where.cluster),
           "PYTHONPATH": f"{where.folder}/{CODE}"}
    u = where.user
    with connect(host, ssh) as c:
        staging = c.run("mktemp -d /tmp/daskfleet-run-XXXXXX", hide=True).stdout.strip()
        try:
            for name, data in files.items():
                c.put(io.BytesIO(data), f"{staging}/{name}")
            installs = " && ".join(
                f"install -o {u} -g {u} -m 0600 {shlex.quote(staging + '/' + n)} {folder}/{n}"
                for n in files)
            # the runs root is root's; a cluster's runs are its user's alone
            c.run(privileged(host, f"install -d -m 0755 "
                                   f"{shlex.quote(str(Path(where.folder).parent.parent))} && "
                                   f"install -d -o {u} -g {u} -m 0700 "
                                   f"{shlex.quote(str(Path(where.folder).parent))} {folder} && "
                                   + installs), hide=True)
        finally:
            c.run(f"rm -rf {shlex.quote(staging)}", warn=True, hide=True)
        assign = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # only the driver goes to the background (braces: `a && b &` would background the
        # whole list, whose shell keeps the SSH channel open until the run ends)
        c.run(as_user(host, u, f"cd {folder} && {{ {assign} setsid "
                            f"{shlex.join([where.python, '-m', MODULE, where.folder])} "
                            f">> {folder}/{LOG} 2>&1 < /dev/null & }}"), hide=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            state = _node_status(c, host, where)
            if state["status"] not in ("starting", "unknown"):
                break
            if time.monotonic() > deadline:
                log = c.run(privileged(host, f"tail -n 30 {folder}/{LOG}"), warn=True,
                            hide=True).stdout
                raise ClusterStartError(f"{host.name}: the run's driver did not start within "
                                        f"{START_TIMEOUT_S:.0f}s; its log:\n{log}")
            time.sleep(0.3)
    if state["status"] == "lost":
        raise ClusterStartError(f"{host.name}: the run's driver exited at start; see "
                                f"`daskfleet runs logs {Path(where.folder).name}`")


def _node_status(c, host, where: Where) -> dict:
    r = c.run(as_user(host, where.user, where.node("--status")), warn=True, hide=True)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ClusterStartError(f"{host.name}: cannot read the state of run "
                                f"{Path(where.folder).name}: {(r.stderr or r.stdout).strip()}"
                                ) from None


# -- follow ----------------------------------------------------------------------------------
RUN_ID = re.compile(r"^\d{8}-\d{6}-[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{4}$")


def locate(runs_dir: Path, run_id: str, cluster_file: str | None = None) -> Where:
    """Where the run lives: from its local record, or (``-c``) from the cluster file."""
    if not RUN_ID.match(run_id):
        raise BatchError(f"{run_id!r} is not a run id (YYYYMMDD-HHMMSS-<job>-xxxx, as `submit "
                         "--detach` printed it and `daskfleet runs` lists it)")
    status = read_status(Path(runs_dir) / run_id) or {}
    if status.get("detached") and not cluster_file:
        return Where(**status["detached"])
    if cluster_file:
        from runner.cluster import Cluster

        with Cluster.from_file(cluster_file) as cluster:
            host = _scheduler(cluster)
            name = cluster.spec.name
        return Where(str(Path(cluster_file).resolve()), name, host.name, run_folder(name, run_id))
    if status:
        raise BatchError(f"run {run_id} was not detached (it ran attached from "
                         f"{status.get('run_dir')}); nothing to follow")
    raise BatchError(f"run {run_id}: no such run in {runs_dir}; give the cluster (-c FILE) to "
                     "find a run submitted from another machine")


def _cluster_and_host(where: Where):
    from runner.cluster import Cluster

    cluster = Cluster.from_file(where.cluster_file)
    host = next((h for h in cluster.hosts() if h.name == where.host), None) or _scheduler(cluster)
    return cluster, host


def refresh(runs_dir: Path, run_id: str, cluster_file: str | None = None) -> dict:
    """The run's status now (asked of its host); a run that has ended is fetched into
    ``runs_dir/<run id>/`` and indexed like any other."""
    runs_dir = Path(runs_dir).resolve()
    local = read_status(runs_dir / run_id) or {}
    if local.get("status") in FINAL:
        return local
    where = locate(runs_dir, run_id, cluster_file)
    cluster, host = _cluster_and_host(where)
    with cluster, connect(host, cluster.ssh()) as c:
        state = _node_status(c, host, where)
        if state["final"]:
            return _fetch(c, host, where, runs_dir, run_id, state)
    return {**local, "run_id": run_id, "status": state["status"], "ahead": state.get("ahead")}


def _fetch(c, host, where: Where, runs_dir: Path, run_id: str, state: dict) -> dict:
    """The run's folder (result/ and the driver's log) into runs_dir/<run id>/, replacing the
    placeholder atomically; a run whose driver was lost gets a failed record naming that."""
    folder = shlex.quote(where.folder)
    # a file of the login user's own, made by mktemp (never a predictable name in /tmp that
    # root would write through), filled by root (the run's folder is the dask user's)
    remote_tar = c.run("mktemp /tmp/daskfleet-fetch-XXXXXX", hide=True).stdout.strip()
    c.run(privileged(host, f"cd {folder} && tar -cf - --ignore-failed-read "
                           f"$(ls -d {RESULT} {LOG} 2>/dev/null) > {shlex.quote(remote_tar)}"),
          hide=True)
    runs_dir.mkdir(parents=True, exist_ok=True)  # `runs wait -c` from a fresh runs folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.fetch-", dir=runs_dir))
    try:
        c.get(remote_tar, str(tmp / "run.tar"))
        c.run(f"rm -f {shlex.quote(remote_tar)}", warn=True, hide=True)
        with tarfile.open(tmp / "run.tar") as tar:
            tar.extractall(tmp / "x", filter="data")
        new = tmp / "x" / RESULT
        if not (new / "status.json").is_file():
            new.mkdir(parents=True, exist_ok=True)
            write_json_atomic(new / "status.json", {
                "run_id": run_id, "status": "failed", "error": (
                    f"the run's driver on {where.host} ended without recording an outcome (the "
                    "host rebooted or the process was killed); its log is in logs/driver.log")})
        if (tmp / "x" / LOG).is_file():
            (new / "logs").mkdir(exist_ok=True)
            shutil.move(tmp / "x" / LOG, new / "logs" / LOG)
        status = json.loads((new / "status.json").read_text())
        status.update(run_dir=str(runs_dir / run_id), detached=asdict(where))
        write_json_atomic(new / "status.json", status)
        old = runs_dir / run_id
        if old.exists():
            old.rename(tmp / "old")
        new.rename(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    runs.record_run_dir(runs_dir, runs_dir / run_id)
    return status


def wait(runs_dir: Path, run_id: str, cluster_file: str | None = None,
         progress: Progress | None = None, timeout: float | None = None) -> dict:
    """Poll until the run ends; return its (fetched) status. Each change of its status (queued,
    running) goes to ``progress``, else to the log."""
    say = Say(progress, logger)
    deadline = None if timeout is None else time.monotonic() + timeout
    said = None
    while True:
        status = refresh(runs_dir, run_id, cluster_file)
        if status["status"] in FINAL:
            return status
        now = (status["status"], tuple(status.get("ahead") or ()))
        if now != said:
            ahead = f" (behind {', '.join(now[1])})" if now[1] else ""
            say(f"run {run_id}: {now[0]}{ahead}")
            said = now
        if deadline is not None and time.monotonic() > deadline:
            raise BatchError(f"run {run_id}: still {status['status']} after {timeout:.0f}s")
        time.sleep(POLL_S)


def cancel(runs_dir: Path, run_id: str, cluster_file: str | None = None) -> dict:
    where = locate(runs_dir, run_id, cluster_file)
    cluster, host = _cluster_and_host(where)
    with cluster, connect(host, cluster.ssh()) as c:
        c.run(as_user(host, where.user, where.node("--cancel")), warn=True, hide=True)
    return refresh(runs_dir, run_id, cluster_file)


def logs(runs_dir: Path, run_id: str, cluster_file: str | None = None,
         follow: bool = False) -> None:
    """The driver's log, to stdout; with ``follow``, until the driver exits."""
    where = locate(runs_dir, run_id, cluster_file)
    cluster, host = _cluster_and_host(where)
    log = shlex.quote(f"{where.folder}/{LOG}")
    if follow:
        script = (f"pid=$({where.node('--pid')}); if [ -n \"$pid\" ]; then "
                  f"tail -n +1 -f --pid=$pid {log}; else cat {log}; fi")
    else:
        script = f"cat {log}"
    with cluster, connect(host, cluster.ssh()) as c:
        # streamed as it comes (the SSH settings hide output by default)
        c.run(as_user(host, where.user, script), warn=True, hide=False, out_stream=sys.stdout)
