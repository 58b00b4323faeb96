"""Operating a running cluster on the lab: security, heal, scale, logs, dashboard, plan, faults."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from runner import Cluster
from runner.cluster.ssh import connect
from runner.dask_workers import joined_workers
from runner.errors import ProvisionError
from runner.lab.addresses import NETNS_PREFIX, STATE_DIR, SUBNET_PREFIX
from runner.provision.tls import CertificateAuthority

REPO = Path(__file__).resolve().parents[2]
LAB_CLUSTER = REPO / "clusters" / "lab.yaml"
SCHEDULER = f"tls://{SUBNET_PREFIX}11:8786"
pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(cli) -> tuple[int, dict]:
    proc = cli("status", "-c", str(LAB_CLUSTER), "--json", check=False)
    return proc.returncode, json.loads(proc.stdout)


def test_clients_without_the_clusters_certificate_are_refused(lab_cluster, workdir: Path):
    from distributed import Client
    cluster = Cluster.from_file(LAB_CLUSTER)
    # TLS, trusting the cluster's CA, but presenting no client certificate: the scheduler ends
    # the connection (a scheduler that accepted it would wait for a message: the read times out).
    ctx = ssl.create_default_context(cafile=str(cluster.ca.ca_cert))
    ctx.check_hostname = False
    with socket.create_connection((f"{SUBNET_PREFIX}11", 8786), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"\0" * 8)
                assert tls.recv(1) == b""
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    # a full certificate, but from another cluster's CA
    other = CertificateAuthority(workdir / "other-ca", "other")
    other.ensure({})
    with pytest.raises((OSError, TimeoutError)):
        Client(SCHEDULER, security=other.client_security(), timeout="4s")
    # and the cluster's own certificate works
    with Client(SCHEDULER, security=cluster.ca.client_security(), timeout="10s") as ok:
        assert ok.submit(sum, [1, 2]).result() == 3


def _handshake_refusals(cli, peer: str, since: str) -> list[str]:
    """The scheduler's log lines since ``since`` (its timestamp format) saying that a TLS
    handshake with ``peer`` failed."""
    out = cli("logs", "lab1", "-n", "2000", "-c", str(LAB_CLUSTER)).stdout
    return [line for line in out.splitlines()
            if f"TLS handshake failed with remote 'tls://{peer}:" in line
            and line.split("] ", 1)[-1][:23] >= since]


def test_a_worker_with_another_clusters_certificate_cannot_join(lab_cluster, cli, workdir: Path):
    other = CertificateAuthority(workdir / "intruder-ca", "intruder")
    other.ensure({"intruder": f"{SUBNET_PREFIX}1"})
    dask = Path(sys.executable).parent / "dask"
    since = time.strftime("%Y-%m-%d %H:%M:%S")  # the lab hosts share this machine's clock
    proc = subprocess.Popen(
        [str(dask), "worker", SCHEDULER, "--name", "intruder", "--no-nanny", "--no-dashboard",
         "--host", f"{SUBNET_PREFIX}1", "--tls-ca-file", str(other.ca_cert),
         "--tls-cert", str(other.cert("intruder")), "--tls-key", str(other.key("intruder"))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # the refusal itself, in the scheduler's log: the handshake fails on the other CA
        deadline = time.monotonic() + 60
        refusals = _handshake_refusals(cli, f"{SUBNET_PREFIX}1", since)
        while not refusals and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
            refusals = _handshake_refusals(cli, f"{SUBNET_PREFIX}1", since)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert refusals and "UNKNOWN_CA" in refusals[-1], (refusals, out[-2000:])
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        names = {w["name"] for w in joined_workers(cluster.client()).values()}
    assert "intruder" not in names
    assert "Registered to" not in out, out


def _until(cli, ok, what: str, timeout: float = 90) -> dict:
    """Poll `status` until ``ok(status)``; fail naming ``what`` and the last status."""
    deadline = time.monotonic() + timeout
    while True:
        rc, st = _status(cli)
        if ok(rc, st):
            return st
        assert time.monotonic() < deadline, (what, rc, st)
        time.sleep(1)


def _restarts(st: dict, process: str) -> int:
    """How often systemd has started ``process``'s unit again since `up` started it."""
    host = next(h for h in st["hosts"] if h["process"] == process)
    assert host["unit"] == f"daskfleet-lab-{process}.service", host
    return host["restarts"]


def test_a_killed_worker_is_started_again_by_its_unit(lab_cluster, cli):
    rc, before = _status(cli)
    assert rc == 0
    victim = next(w for w in before["workers"] if w["host"] == "lab3")
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        host = next(h for h in cluster.hosts() if h.name == "lab3")
        with connect(host, cluster.ssh()) as c:
            c.run(f"kill -KILL -- -{victim['pid']}", warn=False)
    t = time.monotonic()
    # no `up`: systemd starts its unit again, and it joins
    st = _until(cli, lambda rc, st: rc == 0 and next(
        w for w in st["workers"] if w["host"] == "lab3")["pid"] not in (None, victim["pid"]),
        "the killed worker started again and joined")
    print(f"worker SIGKILL -> joined again: {time.monotonic() - t:.1f}s")
    assert _restarts(st, victim["name"]) == _restarts(before, victim["name"]) + 1, st
    # started again with the file's resource limits (clusters/lab.yaml: dask.limits)
    again = next(w for w in st["workers"] if w["host"] == "lab3")["pid"]
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        host = next(h for h in cluster.hosts() if h.name == "lab3")
        with connect(host, cluster.ssh()) as c:
            limits = c.run(f"cat /proc/{int(again)}/limits", warn=False).stdout
    assert re.search(r"Max open files\s+16384\s+16384", limits), limits
    assert re.search(r"Max core file size\s+0\s+0", limits), limits
    # the healthy worker was left alone, and `up` finds nothing to start
    keep = next(w for w in before["workers"] if w["host"] == "lab2")
    assert next(w for w in st["workers"] if w["host"] == "lab2")["pid"] == keep["pid"]
    assert "started: nothing (all running)" in cli("up", "-c", str(LAB_CLUSTER)).stdout


def test_a_killed_scheduler_is_started_again_and_its_workers_rejoin(lab_cluster, cli):
    rc, before = _status(cli)
    assert rc == 0
    sched = next(h for h in before["hosts"] if h["role"] == "scheduler")
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        host = next(h for h in cluster.hosts() if h.name == sched["host"])
        with connect(host, cluster.ssh()) as c:
            c.run(f"kill -KILL -- -{sched['pid']}", warn=False)
    t = time.monotonic()
    # no `up`: systemd starts the scheduler's unit again; the workers, which end when their
    # scheduler goes, are started again by theirs and join it; healthy within the 90 s
    st = _until(cli, lambda rc, st: rc == 0 and st["healthy"] and next(
        h for h in st["hosts"] if h["role"] == "scheduler")["pid"] not in (None, sched["pid"]),
        "the killed scheduler started again, every worker joined", timeout=90)
    print(f"scheduler SIGKILL -> healthy: {time.monotonic() - t:.1f}s")
    assert _restarts(st, "scheduler") == _restarts(before, "scheduler") + 1, st
    assert len(st["workers"]) == len(before["workers"]) and all(w["joined"] for w in st["workers"])
    assert "started: nothing (all running)" in cli("up", "-c", str(LAB_CLUSTER)).stdout


def test_scale_2_to_4_to_1_keeps_computed_results(lab_cluster, cli):
    from distributed.system import MEMORY_LIMIT

    with Cluster.from_file(LAB_CLUSTER) as cluster:
        client = cluster.client()
        out = cli("scale", "4", "-c", str(LAB_CLUSTER)).stdout
        workers = joined_workers(client).values()
        assert len(workers) == 4
        # two workers per host now: the two that ran alone restarted with half the cluster's
        # share of the host (memory_share 0.5), so a host never commits more than it has
        assert "memory limit 0.4750 -> 0.2375" in out and "replacing lab2-w0@lab2" in out, out
        limits = {w["name"]: w["memory_limit"] for w in workers}
        host_memory = set(client.run(lambda: MEMORY_LIMIT).values())
        assert len(set(limits.values())) == 1, limits
        assert all(4 * v <= min(host_memory) for v in limits.values()), (limits, host_memory)
        futures = client.map(lambda x: x * x, range(200), pure=False)
        client.gather(futures)  # computed and held, spread over the 4 workers
        holders = {a for f in futures for a in client.who_has([f])[f.key]}
        assert len(holders) > 1
        out = cli("scale", "1", "-c", str(LAB_CLUSTER)).stdout
        assert "retired:" in out and "none" not in out.split("retired:")[1].split(";")[0]
        assert len(joined_workers(client)) == 1
        assert client.gather(futures) == [x * x for x in range(200)]
        cli("scale", "2", "-c", str(LAB_CLUSTER))
    rc, st = _status(cli)
    assert rc == 0 and sorted(w["host"] for w in st["workers"]) == ["lab2", "lab3"]


def _on_lab3(command: str) -> str:
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        host = next(h for h in cluster.hosts() if h.name == "lab3")
        with connect(host, cluster.ssh()) as c:
            return c.run(command, warn=True).stdout


def test_a_crashed_then_rebooted_host_comes_back_without_an_operator(lab_cluster, cli):
    # what a reboot keeps, as on a real machine: its disk (/usr/local, where the playbook puts
    # the node's scripts, included: never this machine's), not /tmp (emptied at boot)
    marks = ("/var/lib/daskfleet/e2e-mark", "/tmp/e2e-mark", "/usr/local/share/e2e-mark")
    _on_lab3(f"touch {' '.join(marks)}")
    assert _on_lab3(f"ls {' '.join(marks)}").split() == sorted(marks)
    cli("lab", "kill", "lab3")  # every process of lab3 dies at once
    rc, st = _status(cli)
    assert rc == 1
    assert next(h for h in st["hosts"] if h["host"] == "lab3")["state"] == "unreachable"
    # scale works on the degraded cluster with the live host, and says which one is missing
    out = cli("scale", "3", "-c", str(LAB_CLUSTER)).stdout
    assert "starting degraded without lab3 (unreachable)" in out, out
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        joined = joined_workers(cluster.client()).values()
        assert sorted(w["name"] for w in joined) == ["lab2-w0", "lab2-w1"]
    cli("lab", "restart", "lab3")  # back, with its disks, without its processes
    # systemd starts its worker's unit at boot: no `up`
    st = _until(cli, lambda rc, st: rc == 0, "lab3's worker back after the reboot")
    assert sorted(w["name"] for w in st["workers"]) == ["lab2-w0", "lab2-w1", "lab3-w0"]
    # the host's init is systemd, which started the worker's unit and the housekeeping's at
    # this boot; this machine's own enabled units (its sshd) are masked there, nothing failed
    unit = "daskfleet-lab-lab3-w0.service"
    seen = _on_lab3(f"cat /proc/1/comm; systemctl is-enabled {unit} ssh.service; "
                    "systemctl is-system-running; "
                    f"systemctl show -p ActiveState -p NRestarts -p User {unit}; "
                    "systemctl show -p ActiveState daskfleet-supervise; "
                    f"systemctl show -p MainPID --value {unit} | "
                    "xargs -I{} cat /proc/{}/cmdline | tr '\\0' ' '")
    lines = seen.split("\n")
    assert lines[:4] == ["systemd", "enabled", "masked", "running"], seen
    assert {"ActiveState=active", "NRestarts=0", "User=dask-lab"} <= set(lines[4:7]), seen
    assert lines[7] == "ActiveState=active", seen
    assert "bin/dask worker tls://" in seen and "--name lab3-w0" in seen, seen
    assert _on_lab3(f"ls {' '.join(marks)} 2>/dev/null").split() == sorted([marks[0], marks[2]])
    assert not Path(marks[2]).exists()
    # nor does it see the lab's folder on this machine (its key, the other hosts' disks), as
    # no machine sees the laptop that made it: only its own boot files, read-only
    from runner.lab import Lab

    lab = Lab()
    assert lab.key.exists() and (lab.state_dir / "hosts" / "lab2").is_dir()
    seen = _on_lab3(f"ls -A {lab.state_dir}; ls -A {lab.state_dir}/hosts; "
                    f"cat {lab.key} > /dev/null 2>&1 && echo key-readable; "
                    f"touch {lab.host_dir('lab3')}/x 2>/dev/null || echo read-only")
    assert seen.split() == ["hosts", "lab3", "read-only"], seen
    # and its processes are in cgroups of its own: hosts sharing one share every unit's, and a
    # host stopping a unit waits for the other hosts' processes of it
    pids = subprocess.run(["ip", "netns", "pids", f"{NETNS_PREFIX}lab3"], capture_output=True, text=True,
                          check=True).stdout.split()
    def cgroup(pid: str) -> str | None:  # (None: it exited meanwhile)
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        return next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))

    groups = {g for g in map(cgroup, pids) if g is not None}
    assert pids and all(g.startswith(f"/daskfleet-lab/{NETNS_PREFIX}lab3/") for g in groups), groups
    out = cli("up", "-c", str(LAB_CLUSTER)).stdout
    assert "started: nothing (all running)" in out and "changed=0" in out, out  # env kept
    cli("scale", "2", "-c", str(LAB_CLUSTER))
    rc, st = _status(cli)
    assert rc == 0 and sorted(w["name"] for w in st["workers"]) == ["lab2-w0", "lab3-w0"], st


def test_logs_show_each_process_log_by_host(lab_cluster, cli):
    out = cli("logs", "lab2", "-n", "5", "-c", str(LAB_CLUSTER)).stdout
    assert "[lab2 lab2-w0]" in out and "lab3" not in out
    bad = cli("logs", "nosuchhost", "-c", str(LAB_CLUSTER), check=False)
    assert bad.returncode == 2 and "nosuchhost" in bad.stderr


def test_dashboard_tunnel_serves_the_dashboard_until_interrupted(lab_cluster, cli):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "dashboard", "--port", str(port),
                             "-c", str(LAB_CLUSTER)], cwd=cli.workdir, env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, code = time.monotonic() + 30, None
        while code is None and time.monotonic() < deadline:
            try:
                code = urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).status
            except OSError:
                time.sleep(0.5)
        assert code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # a bound: a hang on Ctrl-C fails
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/status" in out


def test_plan_on_an_up_to_date_cluster_changes_nothing(lab_cluster, cli, workdir: Path):
    state_file = workdir / ".daskfleet" / "lab" / "state.json"
    before_state = state_file.read_text()
    rc, before = _status(cli)
    out = cli("plan", "-c", str(LAB_CLUSTER)).stdout
    assert "terraform:\n  no changes" in out, out
    assert "changed=0" in out and "processes that would start: none" in out, out
    rc2, after = _status(cli)
    assert rc == rc2 == 0
    assert [h["pid"] for h in after["hosts"]] == [h["pid"] for h in before["hosts"]]
    assert state_file.read_text() == before_state


def test_the_playbook_run_by_hand_on_the_generated_inventory_changes_nothing(lab_cluster, workdir):
    """`ansible-playbook -i inventory/<cluster>/hosts.yml playbooks/site.yml`, as docs/concepts.md shows:
    the inventory folder carries the cluster's and the shared variables, so it is `up`'s run."""
    from runner.provision.ansible import _binary, parse_recap

    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    proc = subprocess.run([_binary(), "-i", str(workdir / "inventory" / "lab" / "hosts.yml"),
                           "playbooks/site.yml"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    recap = parse_recap(proc.stdout)
    assert sorted(recap) == ["lab1", "lab2", "lab3"], proc.stdout[-2000:]
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), recap


def test_a_python_minor_mismatch_is_refused_before_installing(lab_cluster, workdir: Path):
    from runner.cluster import preflight
    from runner.provision import ansible, machines
    from runner.provision.wheelhouse import build

    cluster = Cluster.from_file(LAB_CLUSTER)
    hosts = cluster.hosts()
    # daskfleet's own check, over SSH, before anything is built or shipped
    with pytest.raises(ProvisionError) as e:
        preflight.node_platforms(hosts, cluster.ssh(), "3.12")
    assert f"lab2 ({SUBNET_PREFIX}12) runs Python 3.11" in str(e.value) and "3.12" in str(e.value)
    # and the playbook's own first play refuses too (for ansible-playbook run by hand)
    from runner.provision.lock import derive_lock

    lab_envs = Path(f"{STATE_DIR}/hosts/lab2/fs/opt/daskfleet/envs")
    before = sorted(p.name for p in lab_envs.iterdir())
    wheelhouse = build(derive_lock(), progress=lambda *_: None)
    extra = {**machines.playbook_vars(cluster, {wheelhouse.lock.machine: wheelhouse}),
             "python_env_python_minor": "3.12"}
    with pytest.raises(ProvisionError) as e:
        ansible.run_playbook(cluster.inventory_path, extra, log=workdir / "mismatch.log")
    msg = str(e.value)
    assert "lab2" in msg and "Python 3.11" in msg and "3.12" in msg
    assert sorted(p.name for p in lab_envs.iterdir()) == before  # nothing installed


def test_wrong_ssh_key_and_host_key_mismatch_fail_up_naming_the_host(lab_cluster, cli, workdir):
    from runner.lab import Lab

    lab = Lab()
    key = workdir / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    wrong_known = workdir / "wrong_known_hosts"
    lines = lab.known_hosts.read_text().splitlines()
    stranger_pub = Path(str(key) + ".pub").read_text().split()[:2]
    # lab2's entry replaced by another key: a man in the middle, as far as SSH can tell
    wrong_known.write_text("\n".join(
        f"{ln.split()[0]} {' '.join(stranger_pub)}" if ln.startswith(f"{SUBNET_PREFIX}12 ") else ln
        for ln in lines) + "\n")
    hosts = (f"hosts:\n  - {{name: sched, address: {SUBNET_PREFIX}11, role: scheduler}}\n"
             f"  - {{name: w2, address: {SUBNET_PREFIX}12, role: worker}}\n")
    for name, pkey, known, words in (
        ("badkey", key, lab.known_hosts, ("sched", "w2")),
        ("badhostkey", lab.key, wrong_known, ("w2",)),
    ):
        cfile = workdir / f"{name}.yaml"
        cfile.write_text(f"name: {name}\nprovider: hosts\nssh: {{private_key: {pkey}, "
                         f"known_hosts: {known}, connect_timeout: 5}}\n" + hosts)
        proc = cli("up", "-c", str(cfile), check=False, timeout=180)
        assert proc.returncode != 0, proc.stdout
        for word in words:
            assert word in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_failed_start_reports_the_host_and_its_log(lab_cluster, cli, workdir: Path):
    """A second cluster on the same hosts and port, brought up through the real playbooks: its
    scheduler cannot bind the port."""
    b_file = workdir / "lab-b.yaml"
    b_file.write_text(LAB_CLUSTER.read_text().replace("name: lab", "name: lab-b"))
    out = cli("up", "-c", str(b_file), check=False, timeout=600)
    msg = out.stderr
    assert out.returncode != 0 and "lab1" in msg and "lab-b-scheduler.log" in msg, msg
    assert "already in use" in msg or "Address in use" in msg or "Errno 98" in msg, msg
    cluster_b = Cluster.from_file(b_file)
    assert (cluster_b.state_dir / "logs").is_dir()
    assert "stopping what this run started: scheduler@lab1" in out.stdout, out.stdout
    # nothing of lab-b runs: its memory claim on the worker hosts went with its failed start
    for host in ("lab2", "lab3"):
        claims = Path(f"{STATE_DIR}/hosts/{host}/fs/var/lib/daskfleet/memory")
        assert sorted(p.name for p in claims.iterdir() if not p.name.startswith(".")) == ["lab"]
    # the running cluster was not disturbed
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        assert len(joined_workers(cluster.client())) == 2


def test_up_keeps_the_current_and_previous_environment_and_prunes_older(lab_cluster, cli):
    envs = Path(f"{STATE_DIR}/hosts/lab2/fs/opt/daskfleet/envs")
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        current = cluster.status_record()["lock_hash"]
        host = next(h for h in cluster.hosts() if h.name == "lab2")
        with connect(host, cluster.ssh()) as c:  # two older environments, the older one first
            c.run("mkdir -p /opt/daskfleet/envs/00000000000000a1 /opt/daskfleet/envs/00000000000000b2"
                  " && touch -d '2 days ago' /opt/daskfleet/envs/00000000000000a1"
                  " && touch -d '1 day ago' /opt/daskfleet/envs/00000000000000b2", warn=False)
    # pruning is the playbook's: --force runs it on hosts recorded as up to date too
    out = cli("up", "-c", str(LAB_CLUSTER), "--force").stdout
    assert "started: nothing" in out and "nothing to do" not in out, out
    assert sorted(p.name for p in envs.iterdir()) == sorted([current, "00000000000000b2"])
    assert (Path(f"{STATE_DIR}/hosts/lab2/fs/opt/daskfleet/clusters/lab/current")
            .resolve().name == current)
