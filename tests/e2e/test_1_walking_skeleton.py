"""The whole path on real lab hosts: lab up -> up -> submit (down and lab down: test_8_teardown).

The e2e tests share one cluster (tests/e2e/conftest.py) and run in file order.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from runner.cluster import Cluster
from runner.cluster.nodeinfo import describe
from runner.cluster.ssh import connect
from runner.dask_workers import joined_workers
from runner.lab import Lab
from runner.lab.addresses import NETNS_PREFIX, STATE_DIR, SUBNET_PREFIX

REPO = Path(__file__).resolve().parents[2]
LAB_CLUSTER = REPO / "clusters" / "lab.yaml"

pytestmark = pytest.mark.e2e


def test_up_starts_a_healthy_tls_cluster(lab_cluster, cli):
    out = lab_cluster["up_output"]
    assert re.search(r"terraform=\d+\.\ds ansible=\d+\.\ds start=\d+\.\ds changed=\d+", out), out
    status = cli("status", "-c", str(LAB_CLUSTER), "--json")
    st = json.loads(status.stdout)
    assert st["healthy"] is True
    assert st["scheduler"]["address"] == f"tls://{SUBNET_PREFIX}11:8786"
    assert sorted(w["host"] for w in st["workers"]) == ["lab2", "lab3"]
    assert all(w["joined"] and w["pid"] for w in st["workers"])


def test_each_worker_runs_from_opt_daskfleet_on_its_own_host(lab_cluster):
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        client = cluster.client()
        info = client.run(describe)
        names = {addr: w["name"] for addr, w in joined_workers(client).items()}
        lock_hash = cluster.status_record()["lock_hash"]
    assert len(info) == 2
    for addr, node in info.items():
        # the worker named lab2-w0 really is a process on host lab2, not on this machine
        assert names[addr].startswith(node["hostname"] + "-"), (addr, node)
        assert node["hostname"] in ("lab2", "lab3")
        assert node["executable"].startswith("/opt/daskfleet/"), node
        assert node["executable"] != sys.executable
        assert node["env_hash"] == lock_hash


def test_a_hosts_processes_start_in_its_own_root_not_the_control_machines_folder(lab_cluster):
    """As on a real machine: the host's init runs in /, and the control machine's project folder
    is not there (a worker's spawned child re-enters its parent's folder, and the ephemeral
    workers died of that when the lab was started from a folder under /tmp)."""
    project = shlex.quote(str(Path(__file__).resolve().parents[2]))
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        seen = {}
        for host in cluster.hosts():  # as root over SSH: init's folder is root's to read
            with connect(host, cluster.ssh()) as c:
                seen[host.name] = c.run(f"readlink /proc/1/cwd; ls -A {project} 2>/dev/null",
                                        warn=True).stdout.split()
    assert seen and all(out == ["/"] for out in seen.values()), seen


def test_dask_processes_keep_their_bytecode_outside_the_root_owned_environment(lab_cluster):
    """The cluster's user cannot write into the environment: without a cache of its own every
    start compiled numpy, pandas and distributed again. The environment itself stays untouched;
    the cache is the cluster's (its user's, in its own folder)."""
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        lock_hash = cluster.status_record()["lock_hash"]
        env = f"/opt/daskfleet/envs/{lock_hash}"
        seen = {}
        for host in cluster.hosts():
            with connect(host, cluster.ssh()) as c:
                seen[host.name] = c.run(
                    f"find /var/lib/daskfleet/clusters/lab/pycache{env} -name 'core*.pyc' "
                    f"-path '*distributed*' -user dask-lab | head -n 1; "
                    f"find {env} -name '*.pyc' | wc -l; "
                    f"stat -c %U {env}", warn=True).stdout.split()
    for out in seen.values():  # [a cached module of distributed, .pyc in the env, env owner]
        assert len(out) == 3 and out[0].startswith(
            "/var/lib/daskfleet/clusters/lab/pycache/opt/"), seen
        assert out[1:] == ["0", "root"], seen


def test_workers_are_forked_from_the_nannys_fork_server(lab_cluster):
    """The dask_node role's multiprocessing-method: forkserver. Each worker process is the child
    of a fork server that imported distributed only (started by the nanny's preload while the
    scheduler started), in the nanny's process group, so `down` stops all three; the worker
    imports the tasks' modules itself (--preload)."""
    import os

    with Cluster.from_file(LAB_CLUSTER) as cluster:
        client = cluster.client()
        pids = client.run(os.getpid)  # worker address -> pid
        hosts = {h.dask_address: h for h in cluster.hosts()}
        seen = {}
        for address, pid in pids.items():
            host = hosts[address.split("://")[1].rsplit(":", 1)[0]]
            with connect(host, cluster.ssh()) as c:
                seen[address] = c.run(
                    f"server=$(ps -o ppid= -p {pid} | tr -d ' '); "
                    f"nanny=$(ps -o ppid= -p $server | tr -d ' '); "
                    f"tr '\\0' ' ' < /proc/$server/cmdline; echo; "
                    f"tr '\\0' ' ' < /proc/$nanny/cmdline; echo; "
                    f"ps -o pgid= -p {pid} -p $server -p $nanny | sort -u | wc -l").stdout
    assert len(seen) == 2, seen
    for out in seen.values():
        server, nanny, groups = out.strip().splitlines()
        assert "multiprocessing.forkserver import main" in server
        assert "['distributed']" in server
        assert " worker tls://" in nanny and "--preload-nanny runner.cluster.nanny_wait" in nanny
        assert "--preload runner.cluster.worker_imports" in nanny
        assert groups.strip() == "1", out  # one process group


def test_versions_match_and_a_plain_client_is_refused(lab_cluster):
    from distributed import Client

    with Cluster.from_file(LAB_CLUSTER) as cluster:
        versions = cluster.check_versions()  # raises on any mismatch
        assert versions["client"]["packages"]["dask"] == versions["scheduler"]["packages"]["dask"]
    # Without the cluster's certificate nobody gets in.
    with pytest.raises((OSError, TimeoutError)):
        Client(f"tcp://{SUBNET_PREFIX}11:8786", timeout="3s")


@pytest.fixture(scope="module")
def small_run(lab_cluster, cli, workdir: Path):
    """jobs/small.yaml submitted once, into a runs folder of its own: (the submit's output, the
    runs folder). The tests that read the run ask for it, so each also runs alone."""
    runs = workdir / "runs-skeleton"
    proc = cli("submit", str(REPO / "jobs" / "small.yaml"), "-c", str(LAB_CLUSTER),
               "--runs-dir", str(runs), timeout=600)
    return proc, runs


def test_submit_trains_well_above_majority_rate(small_run):
    proc, runs = small_run
    run_dirs = sorted(p for p in runs.iterdir() if p.is_dir())
    assert len(run_dirs) == 1, run_dirs
    metrics = json.loads((run_dirs[0] / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "n_train", "n_test", "n_classes", "n_workers",
                "dropped_rows", "timings"):
        assert key in metrics, key
    assert metrics["n_workers"] == 2
    assert metrics["n_train"] + metrics["n_test"] + metrics["dropped_rows"] == 8000
    assert metrics["accuracy"] > metrics["majority_rate"] + 0.3, metrics
    assert (run_dirs[0] / "model.joblib").stat().st_size > 0
    assert f"accuracy={metrics['accuracy']:.4f}" in proc.stdout
    # the corpus reached the workers' own disks (not a shared filesystem)
    data = Lab().state_dir / "hosts"
    for host in ("lab2", "lab3"):
        assert list((data / host / "fs/var/lib/daskfleet/data/lab").glob("*/part-*.parquet"))
    assert not list((data / "lab1" / "fs/var/lib/daskfleet/data/lab").glob("*"))


def test_runs_history_and_predict_on_the_cluster(small_run, cli, workdir: Path):
    import pandas as pd

    _, runs_dir = small_run
    runs = json.loads(cli("runs", "--json", "--runs-dir", str(runs_dir)).stdout)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded", runs
    run_dir = next(p for p in runs_dir.iterdir() if p.is_dir())
    for name in ("report.html", "performance.html", "job.yaml", "status.json"):
        assert (run_dir / name).stat().st_size > 0, name
    data = workdir / "to_predict.csv"
    texts = ["Python 3 library for parsing YAML documents",
             "transitional dummy package", "", "GNU C compiler documentation in HTML"]
    pd.DataFrame({"text": texts}).to_csv(data, index=False)
    out = workdir / "predictions.parquet"
    said = cli("predict", str(run_dir / "model.joblib"), str(data), "-o", str(out),
               "-c", str(LAB_CLUSTER), "--top-k", "2", timeout=300).stdout
    pred = pd.read_parquet(out)
    assert len(pred) == len(texts)  # one prediction per input row, in order
    assert pred.iloc[0]["prediction"] == "python", pred
    # the two best classes, best first, with the hinge model's decision scores
    assert (pred["top_1"] == pred["prediction"]).all() and (pred["score_1"] >= pred["score_2"]).all()
    assert "scores are decision scores" in said, said


def test_second_up_changes_nothing_and_restarts_nothing(lab_cluster, cli):
    before = json.loads(cli("status", "-c", str(LAB_CLUSTER), "--json").stdout)
    out = cli("up", "-c", str(LAB_CLUSTER)).stdout
    assert "changed=0" in out, out
    assert "started: nothing" in out, out
    # each node's record says it has this environment, TLS files and config: no playbook run
    assert "ansible: nothing to do: all 3 hosts" in out, out
    after = json.loads(cli("status", "-c", str(LAB_CLUSTER), "--json").stdout)
    assert [w["pid"] for w in after["workers"]] == [w["pid"] for w in before["workers"]]


def test_up_runs_the_playbook_where_a_node_lost_what_it_was_given(lab_cluster, cli):
    """A node whose cluster config went missing (drift) gets the playbook again, and only it."""
    conf = Path(f"{STATE_DIR}/hosts/lab3/fs/etc/daskfleet/lab/dask/daskfleet.yaml")
    conf.unlink()
    out = cli("up", "-c", str(LAB_CLUSTER)).stdout
    assert "ansible: lab1, lab2 up to date; running on lab3" in out, out
    assert conf.exists() and "changed=0" not in out, out


def test_unreachable_host_fails_up_and_names_it(lab_cluster, cli, workdir: Path):
    lab = Lab()
    known = workdir / "ghost_known_hosts"
    # A recorded key, so the failure is the unreachable address, not a missing known_hosts entry.
    key = lab.known_hosts.read_text().splitlines()[0].split(" ", 1)[1]
    known.write_text(lab.known_hosts.read_text() + f"{SUBNET_PREFIX}99 {key}\n")
    cfile = workdir / "ghost.yaml"
    cfile.write_text(
        "name: ghost\nprovider: hosts\n"
        f"ssh: {{user: root, private_key: {lab.key}, known_hosts: {known}, connect_timeout: 3}}\n"
        f"hosts:\n  - {{name: sched, address: {SUBNET_PREFIX}11, role: scheduler}}\n"
        f"  - {{name: ghost, address: {SUBNET_PREFIX}99, role: worker}}\n")
    proc = cli("up", "-c", str(cfile), check=False, timeout=180)
    assert proc.returncode != 0
    assert "ghost" in proc.stderr and f"{SUBNET_PREFIX}99" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_gateway_keeps_its_mac_when_a_host_with_a_lower_one_comes_and_goes(lab_cluster):
    """The lab's bridge is every host's gateway. A host joining with the lowest MAC and leaving
    again (as an emulated EC2 instance does) must not change the gateway's MAC: hosts that
    cached it would send this machine nothing until their entry expired."""
    import subprocess

    from runner.lab.machine import BRIDGE, BRIDGE_ADDRESS, BRIDGE_MAC, port_open_in

    def bridge_mac() -> str:
        return json.loads(subprocess.run(["ip", "-j", "link", "show", BRIDGE], check=True,
                                         capture_output=True, text=True).stdout)[0]["address"]

    def gateway_mac_on(host: str) -> str:
        ns = f"{NETNS_PREFIX}{host}"
        subprocess.run(["ip", "-n", ns, "neigh", "flush", "to", BRIDGE_ADDRESS], check=True)
        port_open_in(ns, BRIDGE_ADDRESS, 9, timeout=2.0)  # resolves the gateway (open or not)
        neigh = json.loads(subprocess.run(["ip", "-n", ns, "-j", "neigh", "show", BRIDGE_ADDRESS],
                                          check=True, capture_output=True, text=True).stdout)
        return neigh[0]["lladdr"]

    assert bridge_mac() == BRIDGE_MAC and gateway_mac_on("lab1") == BRIDGE_MAC
    subprocess.run(["ip", "link", "add", "dftest-low", "address", "00:00:00:00:00:01", "type",
                    "veth", "peer", "name", "dftest-peer"], check=True)
    try:
        subprocess.run(["ip", "link", "set", "dftest-low", "master", BRIDGE, "up"], check=True)
        assert bridge_mac() == BRIDGE_MAC
    finally:
        subprocess.run(["ip", "link", "del", "dftest-low"], check=False)
    assert bridge_mac() == BRIDGE_MAC and gateway_mac_on("lab1") == BRIDGE_MAC
