"""Where start-to-ready goes: each step of `Cluster.start` timed, over several stop/start rounds.

    PYTHONPATH=. .venv/bin/python bench/start_steps.py [--rounds 4]

Needs the cluster of clusters/lab.yaml up (`daskfleet lab up`, `daskfleet up -c clusters/lab.yaml`).
Prints per round the seconds in: listing what runs (close_unwanted, process_states), the
pre-flight, the start scripts (per_process), the scheduler's port and our pid answering
(wait_port, answering_pid) and the workers joining (wait_ready), next to the progress lines.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path

from runner import Cluster
from runner.cluster import preflight, readiness, running

LAB_CLUSTER = Path(__file__).resolve().parents[1] / "clusters" / "lab.yaml"
STEPS = [(running, "close_unwanted"), (running, "process_states"), (preflight, "run"),
         (running, "per_process"), (readiness, "wait_port"), (readiness, "answering_pid"),
         (readiness, "wait_ready")]


def timed(seconds: dict, module, name: str) -> None:
    """Wrap module.name so that every call adds its duration to seconds[name]."""
    func = getattr(module, name)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            seconds.setdefault(name, []).append(time.perf_counter() - t)

    setattr(module, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    seconds: dict[str, list[float]] = {}
    for module, name in STEPS:
        timed(seconds, module, name)
    totals = []
    with Cluster.from_file(LAB_CLUSTER) as cluster:
        for i in range(args.rounds):
            cluster.stop(progress=lambda *_: None)
            seconds.clear()
            t0 = time.perf_counter()
            cluster.start(cluster.status_record()["env_hashes"],
                          progress=lambda line, t0=t0: print(
                              f"  {time.perf_counter() - t0:6.2f}s {line}"))
            totals.append(time.perf_counter() - t0)
            print(f"round {i + 1}: {totals[-1]:.2f}s  " + "  ".join(
                f"{k}={sum(v):.2f}s" for k, v in seconds.items()))
    print(f"median {statistics.median(totals):.2f}s")


if __name__ == "__main__":
    main()
