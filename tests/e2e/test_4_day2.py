"""Day-2 operations on the session's lab cluster: a change that needs a new scheduler is refused
under a running job, processes that died on their own never jam `down` or `up`, the change is
then applied with no process of the old configuration left on any host; a certificate rotation
rolls through a running job, one worker at a time, and so does the first phase of a CA change,
whose other phases go on once the job ends. Each test leaves the cluster as
clusters/lab.yaml wants it. A thread-count change rolls through a running job too, which ends
with the accuracy of the same job undisturbed (that a worker replaced mid-training leaves the
model as it was: tests/batch/test_rolling_worker.py). A replacement that fails puts the old
processes back, and a process an older daskfleet started outside systemd is replaced by its unit."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jobfiles import MID_TRAINING, busy_job, training_job
from submission import Submission

from runner.cluster import Cluster
from runner.cluster.ssh import connect, fan_out
from runner.lab.addresses import SUBNET_PREFIX

REPO = Path(__file__).resolve().parents[2]
LAB_CLUSTER = REPO / "clusters" / "lab.yaml"
pytestmark = pytest.mark.e2e


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


def _job(workdir: Path, epochs: int, make=busy_job) -> Path:
    path = workdir / f"day2-{epochs}.yaml"
    path.write_text(make("day2", epochs))
    return path


def _dask_processes() -> dict[str, list[str]]:
    """Every dask process's command line on every lab host (its own process table). Each is
    started in a session of its own, so only group leaders count: a child the process forks for
    a moment (to exec a helper) carries its command line too, and is not a second process."""
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        def ps(h):
            with connect(h, cluster.ssh()) as c:
                rows = [line.split(None, 2) for line in
                        c.run("ps -eo pid=,pgid=,args=").stdout.splitlines()]
                return [row[2] for row in rows if len(row) == 3 and row[0] == row[1]
                        and re.search(r"bin/dask (scheduler|worker)", row[2])]

        return {h.name: out for h, out in fan_out(cluster.hosts(), ps, "ps").items()}


def _kill_group(host_name: str, pid: int) -> None:
    """SIGKILL a process group on a lab host, as a crash or the OOM killer would."""
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        host = next(h for h in cluster.hosts() if h.name == host_name)
        with connect(host, cluster.ssh()) as c:
            c.run(f"kill -KILL -- -{int(pid)}")


def _hold_port(host_name: str, port: int) -> int:
    """Another program listening on ``port`` of the host's Dask address; its pid (a group)."""
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        host = next(h for h in cluster.hosts() if h.name == host_name)
        with connect(host, cluster.ssh()) as c:
            return int(c.run(
                "setsid python3 -c 'import socket, time; s = socket.socket(); "
                f"s.bind((\"{host.dask_address}\", {int(port)})); s.listen(); time.sleep(900)' "
                "> /dev/null 2>&1 < /dev/null & echo $!").stdout.strip())


def test_a_scheduler_change_is_refused_under_a_job_then_leaves_nothing_of_the_old(
        lab_cluster, cli, workdir):
    try:
        _scheduler_change(cli, workdir)
    finally:
        cli("up", "-c", str(LAB_CLUSTER), timeout=600)  # back to clusters/lab.yaml
    rc, st = _status(cli)
    assert rc == 0 and st["scheduler"]["address"] == f"tls://{SUBNET_PREFIX}11:8786", st


def _scheduler_change(cli, workdir: Path) -> None:
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
        assert re.search(r"run \d{8}-\d{6}-day2-\w+ is running on it", err), err
        assert "--restart" in err and "Traceback" not in err
        assert job.proc.poll() is None, job.out  # the job runs on
        assert _pids(_status(cli)[1]) == before  # nothing was restarted
    finally:
        if job.proc.poll() is None:
            job.proc.send_signal(signal.SIGINT)
        job.finish(120)
    # no job now: the scheduler and its workers are replaced
    up = cli("up", "-c", str(moved), timeout=600)
    assert "stopping the scheduler and its workers to restart them" in up.stdout, up.stdout
    assert "scheduler@lab1" in up.stdout and "ERROR" not in up.stderr, up.stdout + up.stderr
    rc, st = _status(cli, moved)
    assert rc == 0 and st["scheduler"]["address"] == f"tls://{SUBNET_PREFIX}11:8796", st
    moved_pids = _pids(st)
    # no process of the old configuration on any host: one scheduler, on the new port
    procs = _dask_processes()
    everywhere = [line for lines in procs.values() for line in lines]
    assert len(procs["lab1"]) == 1 and "--port 8796" in procs["lab1"][0], procs
    assert not [line for line in everywhere if "8786" in line], procs
    assert sum(f"dask worker tls://{SUBNET_PREFIX}11:8796" in line for line in everywhere) == 2, procs
    # processes that died on their own (a worker, then the scheduler: SIGKILL, as a crash or
    # the OOM killer) leave pid files that never jam `down` or `up`
    _kill_group("lab3", moved_pids["lab3-w0"])
    _kill_group("lab1", moved_pids["scheduler"])
    for _ in range(2):  # and again: nothing is left to jam the next one either
        down = cli("down", "-c", str(moved), check=False, timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
    assert _dask_processes() == {"lab1": [], "lab2": [], "lab3": []}


def test_a_certificate_rotation_rolls_through_a_running_job(lab_cluster, cli, workdir):
    runs_dir = workdir / "day2-runs"
    runs_dir.mkdir(exist_ok=True)
    rc, st = _status(cli)
    assert rc == 0 and st["certificates"]["lab1"] <= st["certificates"]["ca"], st
    before = _pids(st)
    tls_dir = Path(cli.env["DASKFLEET_STATE_DIR"]) / "lab" / "tls"
    old_cert = (tls_dir / "hosts" / "lab2.pem").read_bytes()
    job = Submission(cli, _job(workdir, 900), runs_dir, LAB_CLUSTER)  # ended by `runs finish`
    job.wait_for(MID_TRAINING)
    rotated = cli("rotate", "-c", str(LAB_CLUSTER), timeout=600)
    rotate_ended = time.monotonic()
    out = rotated.stdout
    assert "rotate: new certificates for lab1, lab2, lab3, client" in out, out
    # only the certificates changed: Ansible installs those alone, not the whole environment
    assert "ansible: only the TLS files changed on lab1, lab2, lab3" in out, out
    assert "ansible: dask_node : Ensure the node's certificate and key are installed" in out, out
    assert "Check whether this lock's environment is already complete" not in out, out
    assert "replacing lab2-w0@lab2 (1/2)" in out and "replacing lab3-w0@lab3 (2/2)" in out, out
    assert "the scheduler keeps its running files while run " in out, out
    assert (tls_dir / "hosts" / "lab2.pem").read_bytes() != old_cert
    rc, st = _status(cli)
    assert rc == 0, st
    after = _pids(st)
    assert after["lab2-w0"] != before["lab2-w0"] and after["lab3-w0"] != before["lab3-w0"]
    sched = next(h for h in st["hosts"] if h["process"] == "scheduler")
    assert after["scheduler"] == before["scheduler"]
    assert sched["up_would"] == {"action": "restart", "reasons": [
        "node config or certificates changed since it started"]}, sched
    # a new CA, under the same job: its first phase (trust both CAs) reaches the workers, one at
    # a time; the next phase waits for the scheduler, which the job holds
    old_ca = (tls_dir / "ca.pem").read_bytes()
    out = cli("rotate", "--new-ca", "-c", str(LAB_CLUSTER), timeout=600).stdout
    rotate_ended = time.monotonic()
    assert "CA change: phase 1 of 3: a new CA, trusted by every process" in out, out
    assert "CA change: phase 1 of 3 is not yet everywhere (still on the files before it: " \
        "scheduler@lab1)" in out, out
    assert "phase 2 of 3" not in out, out
    # the job has run through both: it ends after its current epoch, keeping its model
    asked = cli("runs", "finish", job.run_id, "-c", str(LAB_CLUSTER), "--runs-dir",
                str(runs_dir), timeout=120)
    assert "asked to finish after its current epoch" in asked.stdout, asked.stdout
    assert job.finish(900) == 0, job.out + job.err
    assert "train: finishing early, as asked" in job.out, job.out
    assert job.ended > rotate_ended  # the job ran through the leaf rotation and phase 1
    rc, st = _status(cli)
    assert rc == 0 and any("a CA change is under way (phase 1 of 3)" in w
                           for w in st["warnings"]), st
    # no job now: the same command goes on: the scheduler takes phase 1, then phases 2 and 3
    out = cli("rotate", "--new-ca", "-c", str(LAB_CLUSTER), timeout=600).stdout
    for line in ("CA change: phase 1 of 3 goes on", "CA change: phase 2 of 3: the new CA signs",
                 "CA change: phase 3 of 3: the old CA is no longer trusted", "CA change: done"):
        assert line in out, (line, out)
    rc, st = _status(cli)
    assert rc == 0 and _pids(st)["scheduler"] != before["scheduler"], st
    assert all(h["up_would"] is None for h in st["hosts"]) and st["warnings"] == [], st
    # every host trusts the new CA alone, and holds a certificate the new CA signed
    from cryptography import x509

    (new_ca,) = x509.load_pem_x509_certificates((tls_dir / "ca.pem").read_bytes())
    assert new_ca not in x509.load_pem_x509_certificates(old_ca)
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        def node_files(h):
            with connect(h, cluster.ssh()) as c:
                return c.run("cat /etc/daskfleet/lab/tls/ca.pem /etc/daskfleet/lab/tls/node.pem",
                             hide=True).stdout.encode()

        for host, pem in fan_out(cluster.hosts(), node_files, "cat").items():
            trust, leaf = x509.load_pem_x509_certificates(pem)
            assert trust == new_ca, host.name
            leaf.verify_directly_issued_by(new_ca)


def test_an_edit_to_the_cli_restarts_nothing(lab_cluster, cli, workdir):
    """Only the code the nodes import names their environment: `up` from a project whose CLI
    was edited, run while a job trains, installs nothing and replaces no process (the pids
    stay), and the job trains on through it."""
    rc, st = _status(cli)
    assert rc == 0, st
    before = _pids(st)
    runs_dir = workdir / "cli-edit-runs"
    runs_dir.mkdir(exist_ok=True)
    job = Submission(cli, _job(workdir, 900), runs_dir, LAB_CLUSTER)  # ended by `runs finish`
    job.wait_for(MID_TRAINING)
    edited = workdir / "edited-project"  # the project, with runner/cli.py edited
    shutil.copytree(REPO / "runner", edited / "runner",
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    for name in ("playbooks", "terraform", "clusters", "inventory", "pyproject.toml"):
        if not (edited / name).exists():
            (edited / name).symlink_to(REPO / name)
    with (edited / "runner" / "cli.py").open("a") as f:
        f.write("\n# an operator's edit of the CLI alone\n")
    run = type(cli)(cli.workdir, {**cli.env, "PYTHONPATH": str(edited)})
    loaded = subprocess.run([sys.executable, "-c", "import runner; print(runner.__file__)"],
                            cwd=run.workdir, env=run.env, capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == str(edited / "runner" / "__init__.py"), loaded  # the edited copy runs
    out = run("up", "-c", str(LAB_CLUSTER), timeout=600).stdout
    # the nodes keep their environment (nothing to do, or a playbook run that changed nothing:
    # the project's new folder is a new Terraform module source, and Terraform inits again)
    assert "ansible: nothing to do" in out or "changed=0" in out, out
    assert "started: nothing (all running)" in out, out
    up_ended = time.monotonic()
    rc, st = _status(cli)
    assert rc == 0 and _pids(st) == before, (before, st)
    asked = cli("runs", "finish", job.run_id, "-c", str(LAB_CLUSTER), "--runs-dir",
                str(runs_dir), timeout=120)
    assert "asked to finish after its current epoch" in asked.stdout, asked.stdout
    assert job.finish(900) == 0, job.out + job.err
    assert job.ended > up_ended  # the job ran through the `up`



def test_a_replacement_that_fails_puts_the_old_processes_back(lab_cluster, cli, workdir):
    """A change whose new scheduler cannot start (its port is held on lab1 by another program):
    `up` fails saying why, and the scheduler and the workers it stopped to replace run again as
    they were, with no operator; back on clusters/lab.yaml, `up` has nothing to start."""
    rc, st = _status(cli)
    assert rc == 0 and st["healthy"], st
    taken = _variant(workdir, "port-taken", "  scheduler_port: 8799\n")
    holder = _hold_port("lab1", 8799)
    try:
        failed = cli("up", "-c", str(taken), check=False, timeout=600)
        out = failed.stdout + failed.stderr
        assert failed.returncode == 1 and "Traceback" not in out, out
        assert "address already in use" in out.lower(), out
        back = re.search(r"The processes it replaced run again as they were: (.*)\. ", out)
        assert back and set(back[1].split(", ")) == {"scheduler@lab1", "lab2-w0@lab2",
                                                      "lab3-w0@lab3"}, out
        deadline = time.monotonic() + 90
        while not (st := _status(cli)[1])["healthy"]:  # the workers rejoin the old scheduler
            assert time.monotonic() < deadline, st
            time.sleep(2)
        assert st["scheduler"]["address"] == f"tls://{SUBNET_PREFIX}11:8786", st
        everywhere = [line for lines in _dask_processes().values() for line in lines]
        assert len(everywhere) == 3 and not [line for line in everywhere if "8799" in line]
        again = cli("up", "-c", str(LAB_CLUSTER), timeout=600)
        assert "started: nothing (all running)" in again.stdout, again.stdout
    finally:
        _kill_group("lab1", holder)
        cli("up", "-c", str(LAB_CLUSTER), timeout=600)


def test_a_worker_replacement_that_fails_puts_it_back_and_stops_the_roll(lab_cluster, cli,
                                                                         workdir):
    """A change the workers take one at a time (their port range) whose new worker cannot
    start (the one port is held on each worker host): the first replacement fails, its old
    worker runs again as it was, and the other worker is not touched."""
    rc, st = _status(cli)
    assert rc == 0 and st["healthy"], st
    before = _pids(st)
    held = _variant(workdir, "ports-held", "  worker_port_range: 41000:41000\n")
    holders = {name: _hold_port(name, 41000) for name in ("lab2", "lab3")}
    try:
        failed = cli("up", "-c", str(held), check=False, timeout=600)
        out = failed.stdout + failed.stderr
        assert failed.returncode == 1 and "Traceback" not in out, out
        first = re.search(r"replacing (lab\d-w0)@(lab\d) failed", out)
        assert first, out
        other = {"lab2-w0": "lab3-w0@lab3", "lab3-w0": "lab2-w0@lab2"}[first[1]]
        assert f"The processes it replaced run again as they were: {first[1]}@{first[2]}." in out
        assert f"Not reached, still running as before: {other}." in out, out
        deadline = time.monotonic() + 90
        while not (st := _status(cli)[1])["healthy"]:  # it rejoins
            assert time.monotonic() < deadline, st
            time.sleep(2)
        now = _pids(st)
        assert now["scheduler"] == before["scheduler"]
        assert now[other.split("@")[0]] == before[other.split("@")[0]]  # not touched
        everywhere = [line for lines in _dask_processes().values() for line in lines]
        assert len(everywhere) == 3 and not [line for line in everywhere if "41000" in line]
        again = cli("up", "-c", str(LAB_CLUSTER), timeout=600)
        assert "started: nothing (all running)" in again.stdout, again.stdout
    finally:
        for name, pid in holders.items():
            _kill_group(name, pid)
        cli("up", "-c", str(LAB_CLUSTER), timeout=600)


def test_a_process_an_older_daskfleet_started_is_replaced_by_its_unit(lab_cluster, cli):
    """As on a cluster an older daskfleet made: lab2's worker runs detached, as its cluster's
    user, with a pid file and no unit. `status` says `up` would replace it and why; `up` does
    (rolling: the job-safe way), leaves no process outside its unit, and from then on systemd
    keeps it: killed, it is started again with no `up`."""
    import shlex

    from runner.cluster.process_settings import privileged
    from runner.cluster.processes import START_TIME

    rc, st = _status(cli)
    assert rc == 0 and st["healthy"], st
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        old = next(p for p in cluster.wanted() if p.name == "lab2-w0")
        old.stop(cluster.ssh())
        s = old.settings
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in old.environment().items())
        # the start script of the daskfleet before units (a pid file: pid, start time, spec)
        start = (f"cd {s.work_dir} && {{ {env} setsid {shlex.join(old.command())} "
                 f">> {old.log_file} 2>&1 < /dev/null & pid=$!; "
                 f"echo \"$pid $({START_TIME}) {old.spec_digest}\" > {old.pid_file}; }}")
        with connect(old.host, cluster.ssh()) as c:
            # (its logs were the cluster user's: systemd's are root's)
            c.run(privileged(old.host, f"install -d -o {s.user} -g {s.user} {s.run_dir} && "
                             f"chown {s.user}: {old.log_file} && "
                             + shlex.join(["runuser", "-u", s.user, "--", "bash", "-c", start])))
    deadline = time.monotonic() + 90
    while not (st := _status(cli)[1])["healthy"]:
        assert time.monotonic() < deadline, st
        time.sleep(2)
    legacy = next(h for h in st["hosts"] if h["process"] == "lab2-w0")
    assert legacy["unit"] is None and legacy["up_would"]["action"] == "restart", legacy
    assert "runs outside systemd" in " ".join(legacy["up_would"]["reasons"]), legacy
    up = cli("up", "-c", str(LAB_CLUSTER), timeout=600)
    assert "runs outside systemd" in up.stdout, up.stdout
    st = _status(cli)[1]
    now = next(h for h in st["hosts"] if h["process"] == "lab2-w0")
    assert st["healthy"] and now["unit"] == "daskfleet-lab-lab2-w0.service", st
    assert now["pid"] != legacy["pid"] and now["up_would"] is None, (legacy, now)
    assert len(_dask_processes()["lab2"]) == 1, _dask_processes()  # the old one is gone
    _kill_group("lab2", now["pid"])
    deadline = time.monotonic() + 90
    while not ((st := _status(cli)[1])["healthy"] and _pids(st)["lab2-w0"] != now["pid"]):
        assert time.monotonic() < deadline, st
        time.sleep(2)


def test_a_thread_count_change_rolls_through_a_running_job_with_the_same_accuracy(
        lab_cluster, cli, workdir):
    """`threads_per_worker: 1 -> 2` under a running job: `up` replaces the workers one at a time
    (retired, so their data moves; the scheduler untouched), the job completes after it, and
    its accuracy is the undisturbed run's."""
    runs_dir = workdir / "day2-roll-runs"
    job = _job(workdir, 60, training_job)  # two models: its 60 epochs outlast the roll
    undisturbed = cli("submit", str(job), "-c", str(LAB_CLUSTER), "--runs-dir", str(runs_dir),
                      timeout=900).stdout
    accuracy = re.search(r"accuracy=(\S+)", undisturbed)[1]
    before = _pids(_status(cli)[1])
    two = _variant(workdir, "threads2", "  threads_per_worker: 2\n")
    s = Submission(cli, job, runs_dir, LAB_CLUSTER)
    try:
        s.wait_for(MID_TRAINING)
        out = cli("up", "-c", str(two), timeout=600).stdout
        rolled = time.monotonic()
        assert "replacing lab2-w0@lab2 (1/2)" in out and "replacing lab3-w0@lab3 (2/2)" in out, out
        assert s.finish(900) == 0, s.out + s.err
        assert s.ended > rolled  # it ran through the roll
        assert f"accuracy={accuracy}" in s.out, (accuracy, s.out)
        st = _status(cli, two)[1]
        assert st["healthy"] and _pids(st)["scheduler"] == before["scheduler"], st
        assert {w["threads"] for w in st["workers"]} == {2}, st["workers"]
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        cli("up", "-c", str(LAB_CLUSTER), timeout=600)  # back to one thread, a worker at a time
