"""Bring-up benchmark on the lab: daskfleet's start (environment already installed) next to
Dask's own SSHCluster starting the same scheduler and workers on the same hosts from the same
environment, several rounds in one run, reported as a ratio.

    .venv/bin/python bench/bringup.py [--rounds 3]

Needs root (it makes a lab if none is up) and asyncssh (`pip install asyncssh`) for SSHCluster.
Also prints `daskfleet up` per phase, cold (fresh hosts) and warm (second run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import dask

from runner import Cluster
from runner.lab import Lab

LAB_CLUSTER = Path(__file__).resolve().parents[1] / "clusters" / "lab.yaml"
REMOTE_TLS = "/etc/daskfleet/tls"


def time_daskfleet(cluster: Cluster) -> float:
    """Stop every dask process, then time `start` until all workers have joined."""
    cluster.stop(progress=lambda *_: None)
    t = time.perf_counter()
    cluster.start(cluster.status_record()["env_hashes"], progress=lambda *_: None)
    return time.perf_counter() - t


def time_sshcluster(cluster: Cluster) -> float:
    from distributed import SSHCluster

    hosts = cluster.hosts()
    ssh = cluster.ssh()
    n_workers = len(hosts) - 1
    # Remote processes inherit this config: TLS files at the nodes' own paths, as daskfleet's.
    tls = {"distributed.comm.require-encryption": True,
           "distributed.comm.tls.ca-file": f"{REMOTE_TLS}/ca.pem"}
    for role in ("scheduler", "worker", "client"):
        tls[f"distributed.comm.tls.{role}.cert"] = f"{REMOTE_TLS}/node.pem"
        tls[f"distributed.comm.tls.{role}.key"] = f"{REMOTE_TLS}/node.key"
    cluster.stop(progress=lambda *_: None)  # same ports, same hosts: one at a time
    t = time.perf_counter()
    with dask.config.set(tls):
        ssh_cluster = SSHCluster(
            [h.address for h in hosts],
            connect_options={"known_hosts": str(ssh.known_hosts), "client_keys": [str(ssh.private_key)],
                             "username": hosts[0].user},
            # the lab hosts have no default route: name their interface, as daskfleet names the
            # address (the lab hosts' only interface is eth0)
            worker_options={"nthreads": 1, "local_directory": "/var/lib/daskfleet/work",
                            "interface": "eth0"},
            scheduler_options={"port": cluster.spec.dask.scheduler_port, "dashboard_address": ":0",
                               "protocol": "tls", "interface": "eth0"},
            remote_python="/opt/daskfleet/current/bin/python",
            security=cluster.ca.client_security(),
        )
        ssh_cluster.wait_for_workers(n_workers, timeout=120)
    elapsed = time.perf_counter() - t
    ssh_cluster.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    lab = Lab()
    fresh = not lab.hosts()
    if fresh:
        lab.up(3, progress=lambda *_: None)
    try:
        with Cluster.from_file(LAB_CLUSTER) as cluster:
            cold = cluster.up(progress=lambda *_: None)
            warm = cluster.up(progress=lambda *_: None)
            print(f"daskfleet up, {'fresh hosts' if fresh else 'existing lab'}: {cold.line()}")
            print(f"daskfleet up, second run:        {warm.line()}")
            ours, theirs = [], []
            for i in range(args.rounds):
                ours.append(time_daskfleet(cluster))
                theirs.append(time_sshcluster(cluster))
                print(f"round {i + 1}: daskfleet {ours[-1]:.2f}s  SSHCluster {theirs[-1]:.2f}s")
            cluster.start(cluster.status_record()["env_hashes"], progress=lambda *_: None)
        mo, mt = statistics.median(ours), statistics.median(theirs)
        print(f"median start to all workers ready: daskfleet {mo:.2f}s, SSHCluster {mt:.2f}s, "
              f"ratio daskfleet/SSHCluster = {mo / mt:.2f} (< 1 is faster)")
    finally:
        if fresh:
            with Cluster.from_file(LAB_CLUSTER) as cluster:
                cluster.down(destroy=True, progress=lambda *_: None)
            lab.down(progress=lambda *_: None)


if __name__ == "__main__":
    main()
