"""Day-2 operations on the lab, timed: how long a cluster takes to heal after a worker host
reboots (no operator: systemd starts its workers' units), and a rolling replacement of N
workers (one at a time: retired, stopped, started, joined) against a cold start of the same N.

    .venv/bin/python bench/day2.py [--workers 4] [--rounds 2]

Needs root and the lab cluster of clusters/lab.yaml up (the suite brings it up). The roll is
what `up` does after an edit that changes every worker (here threads_per_worker 1 <-> 2, so
each round rolls back and forth); the cold start stops every process and starts them all at
once. Reported as the ratio roll / cold: the price of keeping a job running through the change.
A benchmark: nothing asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from runner import Cluster
from runner.dask_workers import joined_workers
from runner.lab import Lab

LAB_CLUSTER = Path(__file__).resolve().parents[1] / "clusters" / "lab.yaml"
HEAL_TIMEOUT_S = 180.0


def _quiet(*_) -> None:
    pass


def _started_at(cluster: Cluster) -> dict[str, float]:
    """Each answering worker's process start time (wall clock): name -> seconds since epoch.
    (Names and ids stay the same across a restart, and a rebooted host's pids start again.)"""
    try:
        client = cluster.client()
        workers = joined_workers(client)
        times = client.run(lambda: __import__("psutil").Process().create_time(),
                           workers=list(workers), on_error="return")
        return {workers[a]["name"]: t for a, t in times.items() if isinstance(t, float)}
    except Exception:  # noqa: BLE001 - a client mid-reconnect raises many kinds: not yet
        return {}


def time_reboot(cluster: Cluster, host: str, n_workers: int) -> float:
    """`lab restart` of a worker host, then until its workers answer again as new processes
    (started after the reboot began) along with every other worker."""
    mine = [n for n in _started_at(cluster) if n.startswith(f"{host}-")]
    assert mine, f"no worker on {host}"
    wall, t = time.time(), time.perf_counter()
    Lab().restart(host, progress=_quiet)
    while True:
        now = _started_at(cluster)
        if len(now) == n_workers and all(now.get(n, 0.0) >= wall for n in mine):
            return time.perf_counter() - t
        if time.perf_counter() - t > HEAL_TIMEOUT_S:
            raise SystemExit(f"bench: {host}'s workers not back within {HEAL_TIMEOUT_S:.0f}s")
        time.sleep(0.25)


def time_roll(path: Path, threads: int) -> float:
    """`up`'s reconcile after threads_per_worker changed: every worker replaced in turn."""
    spec = yaml.safe_load(LAB_CLUSTER.read_text())
    spec.setdefault("dask", {})["threads_per_worker"] = threads
    path.write_text(yaml.safe_dump(spec))
    with Cluster.from_file(path) as cluster:
        hashes = cluster.status_record()["env_hashes"]
        t = time.perf_counter()
        cluster.start(hashes, progress=_quiet)
        return time.perf_counter() - t


def time_cold(path: Path) -> float:
    with Cluster.from_file(path) as cluster:
        hashes = cluster.status_record()["env_hashes"]
        cluster.stop(progress=_quiet)
        time.sleep(2.0)  # the processes' exit is over before the clock starts
        t = time.perf_counter()
        cluster.start(hashes, progress=_quiet)
        return time.perf_counter() - t


def measure(workers: int = 4, rounds: int = 2, log=print) -> dict:
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        before = cluster.n_workers()
        cluster.scale(workers, progress=_quiet)
        reboots = [time_reboot(cluster, "lab3", workers) for _ in range(rounds)]
        log(f"day2: worker host reboot to healthy {statistics.median(reboots):.1f}s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.yaml"  # the same cluster (its name, its state): other settings
        rolls, colds = [], []
        for r in range(rounds):
            rolls.append(time_roll(path, 2 if r % 2 == 0 else 1))
            colds.append(time_cold(path))
        if rounds % 2:  # back to the file's own settings
            time_roll(path, 1)
    log(f"day2: roll of {workers} workers {statistics.median(rolls):.1f}s, cold start "
        f"{statistics.median(colds):.1f}s")
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        cluster.scale(before, progress=_quiet)
    return {"workers": workers, "reboot_s": reboots, "roll_s": rolls, "cold_s": colds,
            "reboot_median_s": statistics.median(reboots),
            "roll_over_cold": statistics.median(rolls) / statistics.median(colds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.workers, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
