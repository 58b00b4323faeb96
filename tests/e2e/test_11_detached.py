"""Detached runs: the driver runs on the scheduler's host, so the job outlives the control
machine's `daskfleet` (SIGKILLed) and its link to the cluster (cut); runs queue, one at a time;
a failed run is recorded with its traceback and the next one starts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from jobfiles import MID_TRAINING, busy_job, small_job
from objectstore import Store, object_store

REPO = Path(__file__).resolve().parents[2]
LAB_CLUSTER = REPO / "clusters" / "lab.yaml"
CUT_S = 60  # the minute: longer than any of the cluster's or the client's timeouts

pytestmark = pytest.mark.e2e


def _runs(cli) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads(cli("runs", "--runs-dir", str(_dir(cli)),
                                               "--json").stdout)}


def _dir(cli) -> Path:
    """This module's runs folder (the session's runs/ is the walking skeleton's)."""
    return cli.workdir / "detached-runs"


def _in(cli, *args: str, **kw):
    """A `runs` sub-command on this module's runs folder."""
    return cli("runs", *args, "--runs-dir", str(_dir(cli)), **kw)


def _log(cli, run_id: str) -> str:
    return _in(cli, "logs", run_id).stdout


AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


def _with_object_store(cli) -> dict:
    """The lab's object store (added to the running lab), its credentials in the submitting
    shell's AWS variables; returns them."""
    values = object_store(cli).aws_variables()
    cli.env.update(values)
    return values


def _without_object_store(cli) -> None:
    for k in AWS_VARIABLES:
        cli.env.pop(k, None)


def test_detached_runs_outlive_the_control_machine_and_queue(lab_cluster, cli, workdir):
    _with_object_store(cli)
    try:
        _scenario(cli, workdir)
    finally:
        cli("lab", "heal", "control", check=False)
        _without_object_store(cli)


def _scenario(cli, workdir: Path) -> None:
    long_job = workdir / "detached-long.yaml"
    long_job.write_text(busy_job("detached-long", epochs=900))
    failing = workdir / "detached-fails.yaml"
    failing.write_text("name: detached-fails\ndata:\n  source: files\n"
                       "  path: s3://no-such-bucket/corpus/\nmodel: {kind: sgd}\n")
    small = workdir / "detached-small.yaml"
    small.write_text(small_job("detached-small", seed=5))

    def detach(job: Path) -> str:
        return cli("submit", "--detach", str(job), "-c", str(LAB_CLUSTER), "--runs-dir",
                   str(_dir(cli)), timeout=300).stdout.strip().splitlines()[-1]

    a = detach(long_job)
    # submit returned while the run had not ended: it is on the cluster, queued or running
    assert _runs(cli)[a]["status"] in ("queued", "running")
    b, c = detach(failing), detach(small)
    ids = [a, b, c]
    table = _runs(cli)
    assert table[b]["status"].startswith("queued") and table[c]["status"].startswith("queued")

    deadline = time.monotonic() + 300
    while MID_TRAINING not in _log(cli, a):
        assert time.monotonic() < deadline, _log(cli, a)
        time.sleep(2)
    # a `runs wait` on the control machine, SIGKILLed; then the control machine's link cut
    waiter = subprocess.Popen([sys.executable, "-m", "runner.cli", "runs", "wait", a,
                               "--runs-dir", str(_dir(cli))],
                              cwd=cli.workdir, env=cli.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(3)
    waiter.kill()
    waiter.wait()
    cli("lab", "cut", "control")
    time.sleep(CUT_S)
    cli("lab", "heal", "control")
    assert _runs(cli)[a]["status"] == "running"  # it ran on through all of that
    # it has shown what it had to: it ends after its current epoch, keeping its model
    asked = _in(cli, "finish", a, timeout=120)
    assert f"run {a}: asked to finish after its current epoch" in asked.stdout, asked.stdout

    done = _in(cli, "wait", a, timeout=600)
    assert f"run {a}: succeeded" in done.stdout, done.stdout
    metrics = json.loads((_dir(cli) / a / "metrics.json").read_text())
    early = metrics["finished_early"]
    assert early["epochs_asked"] == 900 and metrics["epochs"] == early["epochs_trained"] < 900
    assert metrics["accuracy"] > 0.5
    assert "train: finishing early, as asked" in (_dir(cli) / a / "logs" / "driver.log").read_text()
    assert (_dir(cli) / a / "model.joblib").is_file()
    assert (_dir(cli) / a / "logs" / "driver.log").is_file()

    failed = _in(cli, "wait", b, check=False, timeout=600)
    assert failed.returncode == 1 and f"run {b}: failed" in failed.stdout, failed.stdout
    assert "bucket 'no-such-bucket' does not exist" in failed.stdout
    trace = (_dir(cli) / b / "logs" / "traceback.txt").read_text()
    assert "Traceback" in trace and "BatchError" in trace

    small_done = _in(cli, "wait", c, timeout=600)
    assert f"run {c}: succeeded" in small_done.stdout
    # it waited its turn: behind the long run, then behind the failing one
    c_log = (_dir(cli) / c / "logs" / "driver.log").read_text()
    assert f"queued behind {a}, {b}" in c_log and f"queued behind {b}" in c_log, c_log
    table = _runs(cli)
    assert [table[i]["status"] for i in ids] == ["succeeded", "failed", "succeeded"]

    # the run that lived through the kill and the cut, attached: the same job for the epochs it
    # trained gives the same model, the same accuracy (a run finished early keeps the model of
    # its epochs so far: tests/batch/test_finish_early.py)
    same = workdir / "detached-long-attached.yaml"
    same.write_text(busy_job("detached-long", epochs=metrics["epochs"]))
    attached = cli("submit", str(same), "-c", str(LAB_CLUSTER), "--runs-dir", str(_dir(cli)),
                   timeout=900)
    assert f"accuracy={metrics['accuracy']:.4f}" in attached.stdout, (metrics["accuracy"],
                                                                      attached.stdout)


def test_a_detached_run_is_cancelled_on_request(lab_cluster, cli, workdir):
    job = workdir / "detached-cancel.yaml"
    job.write_text(busy_job("detached-cancel", epochs=400))
    run_id = cli("submit", "--detach", str(job), "-c", str(LAB_CLUSTER), "--runs-dir",
                 str(_dir(cli))).stdout.split()[-1]
    deadline = time.monotonic() + 300
    while MID_TRAINING not in _log(cli, run_id):
        assert time.monotonic() < deadline, _log(cli, run_id)
        time.sleep(2)
    out = _in(cli, "cancel", run_id, check=False)
    assert out.returncode == 130 and f"run {run_id}: cancelled" in out.stdout, out.stdout
    assert _runs(cli)[run_id]["status"] == "cancelled"
    # the scheduler holds nothing of it: the next run gets the whole cluster
    status = json.loads(cli("status", "-c", str(LAB_CLUSTER), "--json").stdout)
    assert status["healthy"] is True


def test_a_cluster_allowing_two_runs_runs_two_at_once_followed_and_waited_from_elsewhere(
        lab_cluster, cli, workdir):
    """`max_running_jobs: 2`: two detached runs train at once (the first test's file allows one,
    and its runs queue); `runs logs -f` follows one until its driver exits; `runs wait -c`
    finds the other from a runs folder that never heard of it (another machine's). The cluster
    file's `results:` takes both runs (their job files name none): the drivers, on the
    scheduler's host, copy each run folder to the object store, with the credentials of the
    cluster file's storage_options (the shell has none), which no file on the node keeps."""
    store = object_store(cli)
    s3 = store.client()
    s3.create_bucket(Bucket="team-results")
    # the shell has no AWS variables: the cluster file's storage_options alone reach the store
    _two_at_once(cli, workdir, s3, store)


def _two_at_once(cli, workdir: Path, s3, store: Store) -> None:
    from runner.cluster import Cluster
    from runner.jobs.driver import run_folder

    two = workdir / "lab-two-runs.yaml"
    two.write_text(LAB_CLUSTER.read_text() + "max_running_jobs: 2\n" + yaml.safe_dump({
        "results": {"path": "s3://team-results/runs",
                    "storage_options": store.storage_options()}}))
    ids = []
    for name in ("detached-par-a", "detached-par-b"):
        job = workdir / f"{name}.yaml"
        job.write_text(busy_job(name, epochs=400))
        ids.append(cli("submit", "--detach", str(job), "-c", str(two), "--runs-dir",
                       str(_dir(cli)), timeout=300).stdout.split()[-1])
    a, b = ids
    deadline = time.monotonic() + 300
    while [_runs(cli)[i]["status"] for i in ids] != ["running", "running"]:
        assert time.monotonic() < deadline, _runs(cli)
        time.sleep(2)
    assert "queued behind" not in _log(cli, b)

    follower = subprocess.Popen([sys.executable, "-m", "runner.cli", "runs", "logs", b, "-f",
                                 "--runs-dir", str(_dir(cli))], cwd=cli.workdir, env=cli.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        assert follower.poll() is None  # it follows: the run has not ended
        _in(cli, "finish", b, timeout=120)
        out, err = follower.communicate(timeout=300)
    finally:
        if follower.poll() is None:
            follower.kill()
    # it printed the run from its start to its driver's last line, then returned by itself
    assert follower.returncode == 0, err
    assert out.index(f"run {b}: driver on") < out.index(MID_TRAINING) < \
        out.index("train: finishing early, as asked"), out
    assert f"run {b}: succeeded" in _in(cli, "wait", b, timeout=300).stdout
    fetched = (_dir(cli) / b / "logs" / "driver.log").read_text()
    assert out.rstrip().splitlines()[-1] == fetched.rstrip().splitlines()[-1], (out, fetched)

    _in(cli, "finish", a, timeout=120)
    elsewhere = workdir / "detached-runs-elsewhere"
    done = cli("runs", "wait", a, "-c", str(two), "--runs-dir", str(elsewhere), timeout=600)
    assert f"run {a}: succeeded" in done.stdout, done.stdout
    metrics = json.loads((elsewhere / a / "metrics.json").read_text())
    assert metrics["finished_early"]["epochs_trained"] < 400 and metrics["accuracy"] > 0.5
    assert a in {r["id"] for r in json.loads(cli("runs", "--runs-dir", str(elsewhere),
                                                 "--json").stdout)}
    # both copied by their drivers, whole (the final status.json goes last)
    for run_id in (a, b):
        body = s3.get_object(Bucket="team-results", Key=f"runs/{run_id}/status.json")["Body"]
        assert json.loads(body.read())["status"] == "succeeded"
        s3.head_object(Bucket="team-results", Key=f"runs/{run_id}/model.joblib")
    shown = cli("runs", "show", a, "--runs-dir", str(elsewhere)).stdout
    assert f"(copy: s3://team-results/runs/{a}/model.joblib)" in shown, shown
    # the secret went to the drivers in the file they read and removed at their start
    with Cluster.from_file(two) as cluster:
        found = cluster.run_on_hosts(["bash", "-c", "grep -rl -F -- \"$0\" \"$1\" || true",
                                      store.secret, run_folder("lab", a)])
    assert not any(found.values()), found
