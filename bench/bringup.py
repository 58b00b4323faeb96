"""Bring-up benchmark on the lab: daskfleet's start (environment already installed) next to
Dask's own SSHCluster starting the same scheduler and workers on the same hosts from the same
environment, several rounds in one run, reported as a ratio.

    .venv/bin/python bench/bringup.py [--rounds 3]

Needs root and no lab up (it makes one, so the first `up` meets fresh hosts). Times
`daskfleet up` cold (fresh hosts) and warm (nothing changed: the nodes' fingerprints match, so
Ansible is skipped), then the start-to-ready rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import dask

from runner import Cluster
from runner.cluster.process_settings import ENV_LINK, WORK_DIR
from runner.lab import Lab

LAB_CLUSTER = Path(__file__).resolve().parents[1] / "clusters" / "lab.yaml"


# Before each timed start, after the other side's processes were stopped: their exit (and the
# CPU it takes on the hosts, which share this machine's cores) is over before the clock starts.
SETTLE_S = 2.0


def time_daskfleet(cluster: Cluster) -> float:
    """Stop every dask process, then time `start` until all workers have joined."""
    cluster.stop(progress=lambda *_: None)
    time.sleep(SETTLE_S)
    t = time.perf_counter()
    cluster.start(cluster.status_record()["env_hashes"], progress=lambda *_: None)
    return time.perf_counter() - t


def time_sshcluster(cluster: Cluster) -> float:
    from distributed import SSHCluster

    hosts = cluster.hosts()
    ssh = cluster.ssh()
    n_workers = len(hosts) - 1
    # Remote processes inherit this config: TLS files at the nodes' own paths, as daskfleet's
    # (each cluster has its own folders on a node: runner/cluster/process_settings.py)
    remote_tls = f"/etc/daskfleet/{cluster.spec.name}/tls"
    tls = {"distributed.comm.require-encryption": True,
           "distributed.comm.tls.ca-file": f"{remote_tls}/ca.pem"}
    for role in ("scheduler", "worker", "client"):
        tls[f"distributed.comm.tls.{role}.cert"] = f"{remote_tls}/node.pem"
        tls[f"distributed.comm.tls.{role}.key"] = f"{remote_tls}/node.key"
    cluster.stop(progress=lambda *_: None)  # same ports, same hosts: one at a time
    time.sleep(SETTLE_S)
    t = time.perf_counter()
    with dask.config.set(tls):
        ssh_cluster = SSHCluster(
            [h.address for h in hosts],
            connect_options={"known_hosts": str(ssh.known_hosts), "client_keys": [str(ssh.private_key)],
                             "username": hosts[0].user},
            # the lab hosts have no default route: name their interface, as daskfleet names the
            # address (the lab hosts' only interface is eth0)
            worker_options={"nthreads": 1,
                            "local_directory": WORK_DIR.format(cluster=cluster.spec.name),
                            "interface": "eth0"},
            scheduler_options={"port": cluster.spec.dask.scheduler_port, "dashboard_address": ":0",
                               "protocol": "tls", "interface": "eth0"},
            remote_python=ENV_LINK.format(cluster=cluster.spec.name) + "/bin/python",
            security=cluster.ca.client_security(),
        )
        ssh_cluster.wait_for_workers(n_workers, timeout=120)
    elapsed = time.perf_counter() - t
    ssh_cluster.close()
    return elapsed


def up_cli(log: Path) -> float:
    """Seconds of `daskfleet up -c clusters/lab.yaml` run as a user runs it."""
    from scale import run_child

    rc, seconds, _ = run_child(["up", "-c", str(LAB_CLUSTER)], dict(os.environ), log)
    if rc != 0:
        raise SystemExit(f"daskfleet up failed (rc {rc}):\n{log.read_text()[-3000:]}")
    return seconds


def measure(rounds: int = 3, log=print) -> dict:
    """On a lab with fresh hosts: `daskfleet up` cold, then warm (nothing changed), then
    ``rounds`` of start-to-all-workers-ready, daskfleet's and SSHCluster's in turn (who goes
    first alternates; each start waits ``SETTLE_S`` after the previous processes stopped)."""
    with tempfile.TemporaryDirectory() as tmp:
        cold = up_cli(Path(tmp) / "cold.log")
        log(f"daskfleet up, fresh hosts: {cold:.1f}s")
        warm = up_cli(Path(tmp) / "warm.log")
        log(f"daskfleet up, unchanged:   {warm:.1f}s")
    ours, theirs = [], []
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        for i in range(rounds):
            # each side goes first in every other round: neither always follows the other
            if i % 2 == 0:
                ours.append(time_daskfleet(cluster))
                theirs.append(time_sshcluster(cluster))
            else:
                theirs.append(time_sshcluster(cluster))
                ours.append(time_daskfleet(cluster))
            log(f"round {i + 1}: daskfleet {ours[-1]:.2f}s  SSHCluster {theirs[-1]:.2f}s")
        cluster.start(cluster.status_record()["env_hashes"], progress=lambda *_: None)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    return {"up_cold_s": cold, "up_warm_s": warm, "warm_over_cold": warm / cold,
            "start_daskfleet_s": ours, "start_sshcluster_s": theirs,
            "start_median_daskfleet_s": mo, "start_median_sshcluster_s": mt,
            "start_ratio": mo / mt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    lab = Lab()
    if lab.hosts():
        raise SystemExit("bench/bringup.py times `up` on fresh hosts: run `daskfleet lab down` first")
    lab.up(3, progress=lambda *_: None)
    try:
        r = measure(args.rounds)
        print(f"warm/cold up {r['warm_over_cold']:.2f}; median start to all workers ready: "
              f"daskfleet {r['start_median_daskfleet_s']:.2f}s, SSHCluster "
              f"{r['start_median_sshcluster_s']:.2f}s, ratio {r['start_ratio']:.2f} (< 1 is faster)")
    finally:
        with Cluster.from_file(LAB_CLUSTER) as cluster:
            cluster.down(destroy=True, progress=lambda *_: None)
        lab.down(progress=lambda *_: None)


if __name__ == "__main__":
    main()
