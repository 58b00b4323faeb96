"""Day-2 operations on the session's lab cluster: processes that died by themselves never jam
`down` or `up`; a setting that shapes the workers is rolled out one worker at a time through a
running job; a change that needs a new scheduler is refused under a running job, then applied
with no process of the old configuration left on any host. Each test leaves the cluster as
clusters/lab.yaml wants it."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest
from submission import Submission

from runner.cluster import Cluster
from runner.cluster.ssh import connect, fan_out

REPO = Path(__file__).resolve().parents[2]
LAB_CLUSTER = REPO / "clusters" / "lab.yaml"
pytestmark = pytest.mark.e2e

# Long enough to be running while `up` works (about 0.3 s an epoch on the lab's 2 workers); the
# corpus is the fault tests' (the same dataset, cached once).
JOB = ("name: day2\ndata:\n  source: synthetic\n  synthetic: {n_docs: 40000, n_classes: 20, "
       "vocab_size: 5000, doc_len: 40, noise: 0.05, seed: 7}\n  shard_rows: 5000\n"
       "features: {n_features: 262144}\nmodel: {kind: sgd, epochs: EPOCHS}\n")
MID_TRAINING = "train: epoch 1/"


def _status(cli, cfile: Path = LAB_CLUSTER) -> tuple[int, dict]:
    proc = cli("status", "-c", str(cfile), "--json", check=False, timeout=120)
    return proc.returncode, json.loads(proc.stdout)


def _pids(st: dict) -> dict[str, int]:
    return {h["process"]: h["pid"] for h in st["hosts"]}


def _variant(workdir: Path, name: str, extra: str) -> Path:
    """clusters/lab.yaml with its dask section extended: the same cluster, edited."""
    path = workdir / f"lab-{name}.yaml"
    path.write_text(LAB_CLUSTER.read_text().rstrip("\n") + "\n" + extra)
    return path


def _job(workdir: Path, epochs: int) -> Path:
    path = workdir / f"day2-{epochs}.yaml"
    path.write_text(JOB.replace("EPOCHS", str(epochs)))
    return path


def _dask_processes() -> dict[str, list[str]]:
    """Every dask process's command line on every lab host (its own process table)."""
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        def ps(h):
            with connect(h, cluster.ssh()) as c:
                return [line for line in c.run("ps -eo args").stdout.splitlines()
                        if re.search(r"bin/dask (scheduler|worker)", line)]

        return {h.name: out for h, out in fan_out(cluster.hosts(), ps, "ps").items()}


def _kill_group(host_name: str, pid: int) -> None:
    """SIGKILL a process group on a lab host, as a crash or the OOM killer would."""
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        host = next(h for h in cluster.hosts() if h.name == host_name)
        with connect(host, cluster.ssh()) as c:
            c.run(f"kill -KILL -- -{int(pid)}")


def test_processes_that_died_by_themselves_never_jam_down_or_up(lab_cluster, cli):
    rc, st = _status(cli)
    assert rc == 0, st
    pids = _pids(st)
    _kill_group("lab3", pids["lab3-w0"])  # a worker dead on its own: its pid file stays
    _kill_group("lab1", pids["scheduler"])  # and the scheduler
    down = cli("down", "-c", str(LAB_CLUSTER), check=False, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    again = cli("down", "-c", str(LAB_CLUSTER), check=False, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr  # nothing left to jam it either
    assert _dask_processes() == {"lab1": [], "lab2": [], "lab3": []}
    cli("up", "-c", str(LAB_CLUSTER), timeout=600)
    rc, st = _status(cli)
    assert rc == 0, st


def test_a_worker_setting_is_rolled_out_one_worker_at_a_time_through_a_running_job(
        lab_cluster, cli, workdir):
    rc, st = _status(cli)
    assert rc == 0, st
    before = _pids(st)
    edited = workdir / "lab-threads2.yaml"
    edited.write_text(LAB_CLUSTER.read_text().replace("threads_per_worker: 1",
                                                      "threads_per_worker: 2"))
    runs_dir = workdir / "day2-runs"
    runs_dir.mkdir(exist_ok=True)
    try:
        job = Submission(cli, _job(workdir, 160), runs_dir, LAB_CLUSTER)
        job.wait_for(MID_TRAINING)
        # `plan` shows what `up` will replace, and why, before anything changes
        planned = cli("plan", "-c", str(edited), timeout=600).stdout
        assert re.search(r"restart\s+lab2-w0@lab2\s+settings changed", planned), planned
        assert "scheduler@lab1" not in planned.split("would be replaced")[1], planned
        up = cli("up", "-c", str(edited), timeout=600)
        up_ended = time.monotonic()
        assert "replacing lab2-w0@lab2 (1/2)" in up.stdout and \
            "replacing lab3-w0@lab3 (2/2)" in up.stdout, up.stdout
        assert job.finish(600) == 0, job.out + job.err
        # the job was still running when the roll ended, and completed through it
        assert job.ended > up_ended
        metrics = re.search(r"accuracy=([0-9.]+)", job.out)
        assert metrics and float(metrics[1]) > 0.9, job.out
        rc, st = _status(cli, edited)
        assert rc == 0, st
        after = _pids(st)
        assert after["scheduler"] == before["scheduler"]  # never restarted
        assert after["lab2-w0"] != before["lab2-w0"] and after["lab3-w0"] != before["lab3-w0"]
        assert {w["threads"] for w in st["workers"]} == {2}
        assert all(h["up_would"] is None for h in st["hosts"]), st
    finally:
        cli("up", "-c", str(LAB_CLUSTER), timeout=600)  # back to one thread, rolled again
    rc, st = _status(cli)
    assert rc == 0 and {w["threads"] for w in st["workers"]} == {1}, st


def test_a_scheduler_change_is_refused_under_a_job_then_leaves_nothing_of_the_old(
        lab_cluster, cli, workdir):
    moved = _variant(workdir, "port8796", "  scheduler_port: 8796\n")
    runs_dir = workdir / "day2-runs"
    runs_dir.mkdir(exist_ok=True)
    rc, st = _status(cli)
    assert rc == 0, st
    before = _pids(st)
    job = Submission(cli, _job(workdir, 400), runs_dir, LAB_CLUSTER)
    try:
        job.wait_for(MID_TRAINING)
        refused = cli("up", "-c", str(moved), check=False, timeout=600)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        err = refused.stderr
        assert "the scheduler on lab1 must restart" in err and "settings changed" in err, err
        run_id = re.search(r"run (\d{8}-\d{6}-day2-\w+)", err)
        assert run_id, err
        assert "--restart" in err
        assert job.proc.poll() is None, job.out  # the job runs on
        assert _pids(_status(cli)[1]) == before  # nothing was restarted
    finally:
        if job.proc.poll() is None:
            job.proc.send_signal(signal.SIGINT)
        job.finish(120)
    try:
        up = cli("up", "-c", str(moved), timeout=600)
        assert "scheduler@lab1" in up.stdout, up.stdout
        rc, st = _status(cli, moved)
        assert rc == 0 and st["scheduler"]["address"] == "tls://198.18.0.11:8796", st
        # no process of the old configuration on any host: one scheduler, on the new port
        procs = _dask_processes()
        everywhere = [line for lines in procs.values() for line in lines]
        assert len(procs["lab1"]) == 1 and "--port 8796" in procs["lab1"][0], procs
        assert not [line for line in everywhere if "8786" in line], procs
        assert sum("dask worker tls://198.18.0.11:8796" in line for line in everywhere) == 2
    finally:
        cli("up", "-c", str(LAB_CLUSTER), timeout=600)
    rc, st = _status(cli)
    assert rc == 0 and st["scheduler"]["address"] == "tls://198.18.0.11:8786", st


def test_a_certificate_rotation_rolls_through_a_running_job(lab_cluster, cli, workdir):
    runs_dir = workdir / "day2-runs"
    runs_dir.mkdir(exist_ok=True)
    rc, st = _status(cli)
    assert rc == 0 and st["certificates"]["lab1"] <= st["certificates"]["ca"], st
    before = _pids(st)
    tls_dir = Path(cli.env["DASKFLEET_STATE_DIR"]) / "lab" / "tls"
    old_cert = (tls_dir / "hosts" / "lab2.pem").read_bytes()
    job = Submission(cli, _job(workdir, 250), runs_dir, LAB_CLUSTER)  # Ansible runs first
    job.wait_for(MID_TRAINING)
    rotated = cli("rotate", "-c", str(LAB_CLUSTER), timeout=600)
    rotate_ended = time.monotonic()
    out = rotated.stdout
    assert "rotate: new certificates for lab1, lab2, lab3, client" in out, out
    assert "replacing lab2-w0@lab2 (1/2)" in out and "replacing lab3-w0@lab3 (2/2)" in out, out
    assert "the scheduler keeps its running files while run " in out, out
    assert job.finish(600) == 0, job.out + job.err
    assert job.ended > rotate_ended  # the job ran through the whole rotation
    assert (tls_dir / "hosts" / "lab2.pem").read_bytes() != old_cert
    rc, st = _status(cli)
    assert rc == 0, st
    after = _pids(st)
    assert after["lab2-w0"] != before["lab2-w0"] and after["lab3-w0"] != before["lab3-w0"]
    sched = next(h for h in st["hosts"] if h["process"] == "scheduler")
    assert after["scheduler"] == before["scheduler"]
    assert sched["up_would"] == {"action": "restart", "reasons": [
        "node config or certificates changed since it started"]}, sched
    # no job now: `up` restarts the scheduler with its new certificate
    cli("up", "-c", str(LAB_CLUSTER), timeout=600)
    rc, st = _status(cli)
    assert rc == 0 and _pids(st)["scheduler"] != before["scheduler"], st
    assert all(h["up_would"] is None for h in st["hosts"]), st
